//! Health as GitOps tools compute it, with their own engines: kstatus from
//! `sigs.k8s.io/cli-utils` (what Flux and kpt use) and the Argo CD health script
//! run by gopher-lua (the Lua engine Argo CD embeds), both in the
//! `gitops-health` tool that `tools/install-gitops-health.sh` builds and caches.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::repo_root;

/// What the two engines say of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// kstatus: `Current`, `InProgress`, `Failed`, `Terminating`, ...
    pub kstatus: String,
    pub kstatus_message: String,
    /// Argo CD: `Healthy`, `Progressing`, `Degraded`, ...
    pub argo: String,
    pub argo_message: String,
}

/// The Argo CD health script of `FrontendExperience`.
pub fn health_script() -> PathBuf {
    repo_root().join("argocd/resource_customizations/facet.dev/FrontendExperience/health.lua")
}

/// Judges one object (as `kubectl get -o json` prints it).
pub fn judge(object: &serde_json::Value) -> Health {
    let mut child = Command::new(tool())
        .arg(health_script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running gitops-health");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(object.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "gitops-health: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdict: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let field = |name: &str| verdict[name].as_str().unwrap_or_default().to_string();
    Health {
        kstatus: field("kstatus"),
        kstatus_message: field("kstatusMessage"),
        argo: field("argo"),
        argo_message: field("argoMessage"),
    }
}

/// The tool, built once per machine (and per change of its sources).
fn tool() -> &'static PathBuf {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let output = Command::new("bash")
            .arg(repo_root().join("e2e/tools/install-gitops-health.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running install-gitops-health.sh");
        assert!(output.status.success(), "install-gitops-health.sh failed");
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
}
