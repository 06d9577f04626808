//! Asks a rebuilding pod how far it is: its `/readyz` report, read through the API
//! server's pod proxy, so the operator needs no network path to the pods of its own.

use facet_bff::contract::{ProgressReport, HTTP_PORT};
use kube::Client;

/// A pod that does not answer within this is counted as not started.
const ASK_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The pod's report, or `None` while it does not answer with one (not started,
/// not scheduled, or gone).
pub async fn report(client: &Client, namespace: &str, pod: &str) -> Option<ProgressReport> {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{HTTP_PORT}/proxy/readyz");
    let request = http::Request::get(path)
        .body(kube::client::Body::empty())
        .ok()?;
    // 503 carries the report too (a pod that has not caught up is not ready).
    let asked = async {
        let response = client.send(request).await.ok()?;
        response.into_body().collect_bytes().await.ok()
    };
    let body = tokio::time::timeout(ASK_WITHIN, asked).await.ok()??;
    serde_json::from_slice(&body).ok()
}
