//! Plays kube-proxy for tests: follows a Service's selector and its pods'
//! readiness, as the endpointslice controller does (which cannot run here: it
//! refuses the loopback pod IPs the emulated kubelet gives), and hands out a
//! ready endpoint, so a test client reaches "the Service" and moves when it moves.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client};

/// A Service's ready endpoints (`ip:port` of its `http` port), kept current by a
/// thread until dropped.
pub struct ServiceEndpoints {
    ready: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServiceEndpoints {
    pub fn follow(kubeconfig: &Path, namespace: &str, service: &str) -> ServiceEndpoints {
        let ready: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (kubeconfig, namespace, service) = (
            kubeconfig.to_path_buf(),
            namespace.to_string(),
            service.to_string(),
        );
        let thread = std::thread::spawn({
            let (ready, stop) = (ready.clone(), stop.clone());
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    crate::ensure_crypto_provider();
                    let config = kube::Config::from_custom_kubeconfig(
                        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
                        &Default::default(),
                    )
                    .await
                    .unwrap();
                    let client = Client::try_from(config).unwrap();
                    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
                    let pods: Api<Pod> = Api::namespaced(client, &namespace);
                    while !stop.load(Ordering::SeqCst) {
                        if let Some(found) = ready_endpoints(&services, &pods, &service).await {
                            *ready.lock().unwrap() = found;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
            }
        });
        ServiceEndpoints {
            ready,
            stop,
            thread: Some(thread),
        }
    }

    /// A ready endpoint, as a connection through the Service would reach one.
    pub fn pick(&self) -> Option<String> {
        self.ready.lock().unwrap().first().cloned()
    }
}

/// The `ip:port` (of the container port named `http`) of every pod the Service
/// selects that is ready and not terminating; `None` when the API does not answer.
async fn ready_endpoints(
    services: &Api<Service>,
    pods: &Api<Pod>,
    service: &str,
) -> Option<Vec<String>> {
    let selector = services.get(service).await.ok()?.spec?.selector?;
    let selector: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let listed = pods
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
        .ok()?;
    Some(
        listed
            .items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| {
                let status = pod.status.as_ref()?;
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let port = pod
                    .spec
                    .as_ref()?
                    .containers
                    .first()?
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some("http"))?
                    .container_port;
                let ip = status.pod_ip.as_ref()?;
                ready.then(|| format!("{ip}:{port}"))
            })
            .collect(),
    )
}

impl Drop for ServiceEndpoints {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
