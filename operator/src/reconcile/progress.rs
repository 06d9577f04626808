//! Asks a rebuilding pod how far it is: its `/readyz` report, at the pod's IP and
//! `http` port as its Pod object gives them. Not through the API server's pod
//! proxy: that would need `pods/proxy`, a way into any pod's HTTP port, and the
//! proxy refuses some pod addresses (loopback ones, among others).

use std::time::Duration;

use facet_bff::contract::ProgressReport;
use futures::{stream, StreamExt};
use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

use super::builders::replica_bound;
use super::rebuild;
use super::status::Rollout;
use crate::api::Rebuild;

/// A pod that does not answer within this is counted as not started.
const ASK_WITHIN: Duration = Duration::from_secs(5);
/// Pods asked at once: 100 replicas that do not answer take 35 s, not 500.
const ASK_AT_ONCE: usize = 16;

/// The StatefulSet of the definition being built.
pub struct NewSet {
    pub definition: String,
    pub name: String,
    /// Pods it is to have (the spec's replicas).
    pub replicas: i32,
}

/// How far the new set's pods are with their replay; `sts` is the set as read
/// (`None` before it exists).
pub async fn rebuild(
    client: &Client,
    namespace: &str,
    new: NewSet,
    sts: Option<&StatefulSet>,
) -> Rebuild {
    let rollout = sts.map(Rollout::of).unwrap_or_default();
    let pods = (0..replica_bound(new.replicas)).map(|ordinal| format!("{}-{ordinal}", new.name));
    let reports: Vec<Option<ProgressReport>> = stream::iter(pods)
        .map(|pod| async move { report(client, namespace, &pod).await })
        .buffered(ASK_AT_ONCE)
        .collect()
        .await;
    let progress = rebuild::progress(&reports);
    Rebuild {
        definition: new.definition,
        stateful_set: new.name,
        replicas: rollout.replicas,
        ready_replicas: rollout.ready_replicas,
        partitions: progress.partitions as i32,
        partitions_caught_up: progress.caught_up as i32,
        percent: i32::from(progress.percent),
    }
}

/// The pod's report, or `None` while it does not answer with one (not started,
/// not scheduled, or gone).
pub async fn report(client: &Client, namespace: &str, pod: &str) -> Option<ProgressReport> {
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(pod)
        .await
        .ok()??;
    let ip = pod.status?.pod_ip?;
    let port = pod
        .spec?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("http"))?
        .container_port;
    let body = tokio::time::timeout(ASK_WITHIN, get(&ip, port, "/readyz"))
        .await
        .ok()??;
    serde_json::from_slice(&body).ok()
}

/// One plain HTTP/1.1 GET; the body whatever the status (503 carries the report
/// of a pod that has not caught up).
async fn get(ip: &str, port: i32, path: &str) -> Option<bytes::Bytes> {
    let address = format!("{ip}:{port}");
    let stream = tokio::net::TcpStream::connect(&address).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, address)
        .body(Empty::<bytes::Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    Some(response.into_body().collect().await.ok()?.to_bytes())
}
