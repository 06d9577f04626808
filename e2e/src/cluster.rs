//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and
//! kube-controller-manager, built from their Go modules (`tools/install-kube.sh`),
//! with generated certificates, RBAC and service-account signing keys.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::pki::Pki;
use crate::{free_port, repo_root, wait_for};
use rcgen::KeyPair;

/// The directory holding etcd, kube-apiserver, kube-controller-manager and helm.
pub fn kube_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("FACET_KUBE_BIN") {
        return dir.into();
    }
    let output = Command::new("bash")
        .arg(repo_root().join("e2e/tools/install-kube.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running install-kube.sh");
    assert!(output.status.success(), "install-kube.sh failed");
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

pub struct ControlPlane {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    pub api_port: u16,
    /// Cluster-admin (`system:masters`) kubeconfig.
    pub admin_kubeconfig: PathBuf,
    pub bin: PathBuf,
}

impl ControlPlane {
    pub fn start(logs: &Path) -> ControlPlane {
        ControlPlane::start_with(logs, false)
    }

    /// As [`ControlPlane::start`], with every request written to `logs/audit.log`
    /// (JSON lines at the Metadata level: who, verb, resource), so a benchmark can
    /// count what one client asked of the API server.
    pub fn start_audited(logs: &Path) -> ControlPlane {
        ControlPlane::start_with(logs, true)
    }

    fn start_with(logs: &Path, audited: bool) -> ControlPlane {
        let bin = kube_bin();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let path = |name: &str| root.join(name);
        let pki = Pki::new();
        std::fs::write(path("ca.crt"), &pki.ca_pem).unwrap();
        let (server_crt, server_key) = pki.issue(
            "kube-apiserver",
            None,
            &[
                "localhost",
                "127.0.0.1",
                "10.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
        );
        std::fs::write(path("apiserver.crt"), server_crt).unwrap();
        std::fs::write(path("apiserver.key"), server_key).unwrap();
        let (admin_crt, admin_key) = pki.issue("facet-e2e-admin", Some("system:masters"), &[]);
        let service_accounts = KeyPair::generate().unwrap();
        std::fs::write(path("sa.key"), service_accounts.serialize_pem()).unwrap();
        std::fs::write(path("sa.pub"), service_accounts.public_key_pem()).unwrap();

        let etcd_port = free_port();
        let api_port = free_port();
        let mut plane = ControlPlane {
            admin_kubeconfig: path("admin.kubeconfig"),
            dir,
            children: Vec::new(),
            api_port,
            bin: bin.clone(),
        };
        std::fs::write(
            &plane.admin_kubeconfig,
            plane.kubeconfig(&admin_crt, &admin_key, None),
        )
        .unwrap();

        plane.spawn(
            logs,
            "etcd",
            Command::new(bin.join("etcd")).args([
                "--data-dir",
                &path("etcd").display().to_string(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", free_port()),
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ]),
        );
        let file = |name: &str| path(name).display().to_string();
        let mut audit = Vec::new();
        if audited {
            std::fs::write(
                path("audit-policy.yaml"),
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
            )
            .unwrap();
            audit.push(format!("--audit-policy-file={}", file("audit-policy.yaml")));
            audit.push(format!(
                "--audit-log-path={}",
                logs.join("audit.log").display()
            ));
            // One file, however long (it is rotated at 100 MB otherwise).
            audit.push("--audit-log-maxsize=100000".into());
        }
        plane.spawn(
            logs,
            "kube-apiserver",
            Command::new(bin.join("kube-apiserver")).args(audit).args([
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={}", file("apiserver.crt")),
                format!("--tls-private-key-file={}", file("apiserver.key")),
                format!("--client-ca-file={}", file("ca.crt")),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", file("sa.pub")),
                format!("--service-account-signing-key-file={}", file("sa.key")),
                // Room for a thousand experiences' Services (a /24 ran out at 254).
                "--service-cluster-ip-range=10.0.0.0/16".into(),
                "--allow-privileged=true".into(),
                "--enable-priority-and-fairness=false".into(),
            ]),
        );
        wait_for(
            "kube-apiserver to be ready",
            Duration::from_secs(120),
            || plane.kubectl(&["get", "--raw", "/readyz"]).status.success(),
        );
        plane.spawn(logs, "kube-controller-manager", Command::new(bin.join("kube-controller-manager")).args([
            format!("--kubeconfig={}", plane.admin_kubeconfig.display()),
            "--leader-elect=false".into(),
            "--controllers=garbage-collector-controller,statefulset-controller,deployment-controller,replicaset-controller,namespace-controller,serviceaccount-controller,horizontal-pod-autoscaler-controller".into(),
            // Autoscalers are checked every 2 s instead of 15 s, so a test waits less.
            "--horizontal-pod-autoscaler-sync-period=2s".into(),
            "--secure-port=0".into(),
            "--use-service-account-credentials=false".into(),
        ]));
        plane
    }

    fn spawn(&mut self, logs: &Path, name: &str, command: &mut Command) {
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
        let child = command
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.children.push(child);
    }

    /// A kubeconfig for the given client certificate, optionally impersonating `user`.
    fn kubeconfig(&self, crt: &str, key: &str, impersonate: Option<&str>) -> String {
        use base64_encode as b64;
        let mut user = format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(crt.as_bytes()),
            b64(key.as_bytes())
        );
        if let Some(as_user) = impersonate {
            user.push_str(&format!("    as: {as_user}\n"));
        }
        let ca = std::fs::read_to_string(self.dir.path().join("ca.crt")).unwrap();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\n\
             users:\n- name: e2e\n  user:\n{user}contexts:\n- name: e2e\n  context: {{cluster: e2e, user: e2e}}\ncurrent-context: e2e\n",
            port = self.api_port,
            ca = b64(ca.as_bytes()),
        )
    }

    /// A kubeconfig that acts as `user` through impersonation (the admin may impersonate).
    pub fn impersonating_kubeconfig(&self, user: &str) -> PathBuf {
        let admin = std::fs::read_to_string(&self.admin_kubeconfig).unwrap();
        let file = self
            .dir
            .path()
            .join(format!("{}.kubeconfig", user.replace(':', "_")));
        let with_as = admin.replace("contexts:\n", &format!("    as: {user}\ncontexts:\n"));
        std::fs::write(&file, with_as).unwrap();
        file
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// kubectl that must succeed; returns its standard output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// [`ControlPlane::apply`] that must succeed.
    pub fn apply_ok(&self, manifest: &str) {
        let applied = self.apply(manifest);
        assert!(
            applied.status.success(),
            "kubectl apply failed:\n{}",
            String::from_utf8_lossy(&applied.stderr)
        );
    }

    /// `kubectl apply -f -` with the given manifest text.
    pub fn apply(&self, manifest: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(["apply", "--server-side", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub async fn client(&self) -> kube::Client {
        crate::ensure_crypto_provider();
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.admin_kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
