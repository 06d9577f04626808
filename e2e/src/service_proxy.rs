//! Plays kube-proxy for tests: follows a Service's EndpointSlices (as the real
//! endpointslice controller writes them from pod readiness) and hands out a ready
//! endpoint, so a test client reaches "the Service" and moves when it moves.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
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
        let (kubeconfig, namespace, selector) = (
            kubeconfig.to_path_buf(),
            namespace.to_string(),
            format!("kubernetes.io/service-name={service}"),
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
                    let slices: Api<EndpointSlice> =
                        Api::namespaced(Client::try_from(config).unwrap(), &namespace);
                    while !stop.load(Ordering::SeqCst) {
                        if let Ok(listed) =
                            slices.list(&ListParams::default().labels(&selector)).await
                        {
                            *ready.lock().unwrap() =
                                listed.items.iter().flat_map(ready_endpoints).collect();
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

fn ready_endpoints(slice: &EndpointSlice) -> Vec<String> {
    let Some(port) = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .and_then(|p| p.port)
    else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.first())
        .map(|address| format!("{address}:{port}"))
        .collect()
}

impl Drop for ServiceEndpoints {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
