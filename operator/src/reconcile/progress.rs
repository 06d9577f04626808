//! Asks a rebuilding pod how far it is: its `/readyz` report, from the pod's IP
//! and `http` port as its Pod object gives them. (The API server's pod proxy would
//! spare the network path, but it refuses loopback pod IPs, and it would give the
//! operator a way into every pod's HTTP port, which it does not need.)

use std::time::Duration;

use facet_bff::contract::ProgressReport;
use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

/// A pod that does not answer within this is counted as not started.
const ASK_WITHIN: Duration = Duration::from_secs(5);

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
