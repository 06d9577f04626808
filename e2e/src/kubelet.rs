//! Plays the kubelet for Facet's pods only: binds the pods the StatefulSet
//! controller creates to a node, runs each as a local `facet-bff` process from the
//! exact pod spec (args, env with downward-API values, volumes as directories),
//! and reports phase, IP and the Ready condition from the process's own `/readyz`.
//! Each pod gets its own loopback address (127.0.0.x) as its pod IP.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::process::facet_bff_binary;

pub const NODE: &str = "facet-e2e-node";
const POD_SELECTOR: &str = "app.kubernetes.io/managed-by=facet-operator";

struct RunningPod {
    namespace: String,
    name: String,
    ip: String,
    http_port: i32,
    child: Child,
    ready: Option<bool>,
    restarts: i32,
    command: Command,
    log: PathBuf,
    /// `terminationGracePeriodSeconds`: how long SIGTERM is given before SIGKILL.
    grace: Duration,
    /// When SIGTERM was sent (the pod is being deleted).
    terminating_since: Option<std::time::Instant>,
}

/// A handle on the emulated kubelet; dropping it stops every pod process.
pub struct Kubelet {
    stop: Arc<AtomicBool>,
    pods: Arc<Mutex<HashMap<String, RunningPod>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    pub fn start(kubeconfig: &Path, logs: &Path) -> Kubelet {
        let stop = Arc::new(AtomicBool::new(false));
        let pods: Arc<Mutex<HashMap<String, RunningPod>>> = Arc::default();
        let state = State {
            kubeconfig: kubeconfig.to_path_buf(),
            logs: logs.to_path_buf(),
            work: tempfile::tempdir().unwrap().keep(),
            pods: pods.clone(),
            next_ip: 10,
        };
        let stop_flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(state.run(stop_flag));
        });
        Kubelet {
            stop,
            pods,
            thread: Some(thread),
        }
    }

    /// SIGKILLs a pod's process; the kubelet restarts it as `restartPolicy: Always` would.
    pub fn kill_process(&self, namespace: &str, name: &str) {
        let mut pods = self.pods.lock().unwrap();
        let pod = pods
            .values_mut()
            .find(|p| p.namespace == namespace && p.name == name)
            .unwrap_or_else(|| panic!("no running pod {namespace}/{name}"));
        let _ = pod.child.kill();
    }

    /// The loopback address and HTTP port of a running pod.
    pub fn address(&self, namespace: &str, name: &str) -> Option<String> {
        let pods = self.pods.lock().unwrap();
        pods.values()
            .find(|p| p.namespace == namespace && p.name == name)
            .map(|p| format!("{}:{}", p.ip, p.http_port))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for pod in self.pods.lock().unwrap().values_mut() {
            let _ = pod.child.kill();
            let _ = pod.child.wait();
        }
    }
}

struct State {
    kubeconfig: PathBuf,
    logs: PathBuf,
    work: PathBuf,
    pods: Arc<Mutex<HashMap<String, RunningPod>>>,
    next_ip: u8,
}

impl State {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        crate::ensure_crypto_provider();
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = Client::try_from(config).unwrap();
        register_node(&client).await;
        while !stop.load(Ordering::SeqCst) {
            if let Err(e) = self.sync(&client).await {
                eprintln!("kubelet: {e}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn sync(&mut self, client: &Client) -> Result<(), kube::Error> {
        let pods: Api<Pod> = Api::all(client.clone());
        let listed = pods
            .list(&ListParams::default().labels(POD_SELECTOR))
            .await?;
        let mut seen = Vec::new();
        for pod in listed {
            let uid = pod.uid().unwrap_or_default();
            seen.push(uid.clone());
            let namespace = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            if pod.metadata.deletion_timestamp.is_some() {
                // As a kubelet does: the object goes once the process has exited,
                // so a pod drains (serving, not ready) for as long as it takes.
                if !self.terminate_pod(&uid) {
                    continue;
                }
                let _ = api
                    .delete(
                        &name,
                        &DeleteParams {
                            grace_period_seconds: Some(0),
                            ..DeleteParams::default()
                        },
                    )
                    .await;
                continue;
            }
            let bound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some();
            if !bound {
                bind(&api, &name).await?;
                continue;
            }
            let running = self.pods.lock().unwrap().contains_key(&uid);
            if !running {
                self.start_pod(client, &pod).await?;
            }
            self.report(&api, &uid).await?;
        }
        let gone: Vec<String> = self
            .pods
            .lock()
            .unwrap()
            .keys()
            .filter(|k| !seen.contains(k))
            .cloned()
            .collect();
        for uid in gone {
            self.stop_pod(&uid);
        }
        Ok(())
    }

    /// SIGTERM once, then SIGKILL after the grace period; true once the process
    /// has exited (or there is none).
    fn terminate_pod(&self, uid: &str) -> bool {
        let mut pods = self.pods.lock().unwrap();
        let Some(pod) = pods.get_mut(uid) else {
            return true;
        };
        let since = *pod.terminating_since.get_or_insert_with(|| {
            unsafe {
                libc::kill(pod.child.id() as i32, libc::SIGTERM);
            }
            std::time::Instant::now()
        });
        let exited = matches!(pod.child.try_wait(), Ok(Some(_)));
        if !exited && since.elapsed() < pod.grace {
            return false;
        }
        let _ = pod.child.kill();
        let _ = pod.child.wait();
        pods.remove(uid);
        true
    }

    fn stop_pod(&self, uid: &str) {
        if let Some(mut pod) = self.pods.lock().unwrap().remove(uid) {
            unsafe {
                libc::kill(pod.child.id() as i32, libc::SIGTERM);
            }
            for _ in 0..50 {
                if matches!(pod.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = pod.child.kill();
            let _ = pod.child.wait();
        }
    }

    async fn start_pod(&mut self, client: &Client, pod: &Pod) -> Result<(), kube::Error> {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let container = &spec.containers[0];
        let ip = format!("127.0.0.{}", self.next_ip);
        self.next_ip += 1;
        let pod_dir = self.work.join(format!("{namespace}-{name}-{uid}"));

        // Volumes become directories: configMaps and secrets written out, claims
        // kept per claim name (they outlive pods), emptyDirs per pod.
        let mut volume_dirs = BTreeMap::new();
        for volume in spec.volumes.clone().unwrap_or_default() {
            let dir = match (
                &volume.config_map,
                &volume.secret,
                &volume.persistent_volume_claim,
            ) {
                (Some(cm), _, _) => {
                    let dir = pod_dir.join("configmaps").join(&volume.name);
                    let map = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
                        .get(&cm.name)
                        .await?;
                    write_files(
                        &dir,
                        map.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    );
                    dir
                }
                (_, Some(secret), _) => {
                    let dir = pod_dir.join("secrets").join(&volume.name);
                    let name = secret.secret_name.clone().unwrap_or_default();
                    // An optional Secret that is missing mounts as an empty directory.
                    let found = Api::<Secret>::namespaced(client.clone(), &namespace)
                        .get_opt(&name)
                        .await?;
                    let data = match (found, secret.optional) {
                        (Some(secret), _) => secret.data.unwrap_or_default(),
                        (None, Some(true)) => BTreeMap::new(),
                        (None, _) => return Ok(()),
                    };
                    write_files(&dir, data.into_iter().map(|(k, v)| (k, v.0)));
                    dir
                }
                (_, _, Some(claim)) => self
                    .work
                    .join("claims")
                    .join(&namespace)
                    .join(&claim.claim_name),
                _ => pod_dir.join("volumes").join(&volume.name),
            };
            std::fs::create_dir_all(&dir).unwrap();
            volume_dirs.insert(volume.name.clone(), dir);
        }
        let mut mounts: Vec<(String, PathBuf)> = container
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                volume_dirs
                    .get(&m.name)
                    .map(|dir| (m.mount_path, dir.clone()))
            })
            .collect();
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let local = |text: &str| {
            let mut text = text.replace("0.0.0.0", &ip);
            for (path, dir) in &mounts {
                if text.starts_with(path.as_str()) {
                    text = format!("{}{}", dir.display(), &text[path.len()..]);
                    break;
                }
            }
            text
        };

        let mut command = Command::new(facet_bff_binary());
        command
            .current_dir(&pod_dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for arg in container.args.clone().unwrap_or_default() {
            command.arg(local(&arg));
        }
        for var in container.env.clone().unwrap_or_default() {
            let value = match (
                &var.value,
                var.value_from.as_ref().and_then(|v| v.field_ref.as_ref()),
            ) {
                (Some(value), _) => resolve_services(client, &local(value)).await,
                (None, Some(field)) => match field.field_path.as_str() {
                    "metadata.name" => name.clone(),
                    "metadata.namespace" => namespace.clone(),
                    "status.podIP" => ip.clone(),
                    other => panic!("kubelet emulation: unsupported fieldRef {other}"),
                },
                _ => continue,
            };
            command.env(&var.name, value);
        }
        let http_port = container
            .ports
            .clone()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref() == Some("http"))
            .map(|p| p.container_port)
            .unwrap_or(8080);
        let log = self.logs.join(format!("pod-{namespace}-{name}.log"));
        let mut child = spawn_logged(&mut command, &log);
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let status = json!({"status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        }});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            // The pod is not ours to run after all: stop what was started.
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        self.pods.lock().unwrap().insert(
            uid,
            RunningPod {
                namespace,
                name,
                ip,
                http_port,
                child,
                ready: None,
                restarts: 0,
                command,
                log,
                grace: Duration::from_secs(
                    spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64,
                ),
                terminating_since: None,
            },
        );
        Ok(())
    }

    /// Restarts an exited process and reports readiness when it changes.
    async fn report(&self, api: &Api<Pod>, uid: &str) -> Result<(), kube::Error> {
        let (name, address, changed, restarts) = {
            let mut pods = self.pods.lock().unwrap();
            let Some(pod) = pods.get_mut(uid) else {
                return Ok(());
            };
            if let Ok(Some(_)) = pod.child.try_wait() {
                pod.restarts += 1;
                pod.child = spawn_logged(&mut pod.command, &pod.log);
            }
            let address = format!("{}:{}", pod.ip, pod.http_port);
            (pod.name.clone(), address, pod.ready, pod.restarts)
        };
        let ready = tokio::task::spawn_blocking(move || probe(&address))
            .await
            .unwrap_or(false);
        if changed == Some(ready) {
            return Ok(());
        }
        let status = if ready { "True" } else { "False" };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = json!({"status": {
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
                {"type": "Ready", "status": status, "lastTransitionTime": now},
            ],
            "containerStatuses": [{
                "name": "bff", "ready": ready, "restartCount": restarts, "started": true,
                "image": "facet-bff", "imageID": "", "state": {"running": {"startedAt": now}},
            }],
        }});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        if let Some(pod) = self.pods.lock().unwrap().get_mut(uid) {
            pod.ready = Some(ready);
        }
        Ok(())
    }
}

fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    command
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("starting a pod process")
}

fn write_files(dir: &Path, files: impl Iterator<Item = (String, Vec<u8>)>) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The readiness probe: GET /readyz answers 200.
fn probe(address: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) =
        std::net::TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

async fn bind(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
    });
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn register_node(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
    }))
    .unwrap();
    let _ = nodes.create(&PostParams::default(), &node).await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now}
    ]}});
    let _ = nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
        .await;
}

/// Plays cluster DNS for a headless Service with `publishNotReadyAddresses`:
/// each `<service>.<namespace>.svc:<port>` in a comma-separated value becomes
/// `<pod IP>:<port>` for every pod the Service selects that has an IP (loopback
/// addresses here), as the name would resolve in a cluster when the pod starts.
/// Other values are returned as they are.
async fn resolve_services(client: &Client, value: &str) -> String {
    let mut resolved = Vec::new();
    for entry in value.split(',') {
        let Some((host, port)) = entry.rsplit_once(':') else {
            return value.to_string();
        };
        let parts: Vec<&str> = host.split('.').collect();
        let [service, namespace, "svc"] = parts.as_slice() else {
            return value.to_string();
        };
        let selector =
            Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), namespace)
                .get_opt(service)
                .await
                .ok()
                .flatten()
                .and_then(|s| s.spec?.selector)
                .unwrap_or_default();
        if selector.is_empty() {
            continue;
        }
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let pods = Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().labels(&labels.join(",")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for pod in pods {
            if let Some(ip) = pod.status.and_then(|s| s.pod_ip) {
                resolved.push(format!("{ip}:{port}"));
            }
        }
    }
    resolved.join(",")
}
