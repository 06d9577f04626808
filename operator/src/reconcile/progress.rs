//! Asks a rebuilding pod how far it is: its `/readyz` report, at the pod's IP and
//! internal `metrics` port as its Pod object gives them (the public `/readyz` says
//! only whether the pod is ready). Not through the API server's pod
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

/// What a serving set's pods that are not ready say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotReady {
    /// The first pod whose runtime keeps exiting (its Pod status says so), or whose
    /// readiness report names a problem: `(reason, message)` for `Degraded`.
    pub problem: Option<(&'static str, String)>,
    /// Whether a pod runs: its report may change (Kafka refused, then reached; a
    /// replay under way) while no object does, so it is asked again soon.
    pub running: bool,
}

/// Asks every pod of a serving set that is not settled why it is not ready.
pub async fn why_not_ready(client: &Client, namespace: &str, set: &str, replicas: i32) -> NotReady {
    let pods = (0..replica_bound(replicas)).map(|ordinal| format!("{set}-{ordinal}"));
    let answers: Vec<(bool, Option<(&'static str, String)>)> = stream::iter(pods)
        .map(|name| async move {
            let Some(pod) = fetch(client, namespace, &name).await else {
                return (false, None);
            };
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if let Some(looping) = crash_loop(&name, &pod) {
                return (running, Some(("CrashLoop", looping)));
            }
            let problem = ask(&pod).await.and_then(|report| problem(&name, &report));
            (running, problem)
        })
        .buffered(ASK_AT_ONCE)
        .collect()
        .await;
    NotReady {
        running: answers.iter().any(|(running, _)| *running),
        problem: answers.into_iter().find_map(|(_, problem)| problem),
    }
}

/// A pod whose containers keep exiting (`CrashLoopBackOff`): which, how often,
/// and how it last ended, as its status tells.
pub fn crash_loop(name: &str, pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|status| {
        let waiting = status.state.as_ref()?.waiting.as_ref()?;
        if waiting.reason.as_deref() != Some("CrashLoopBackOff") {
            return None;
        }
        let last = status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| {
                let why = t.reason.as_deref().unwrap_or("exited");
                format!("; last exit code {} ({why})", t.exit_code)
            })
            .unwrap_or_default();
        Some(format!(
            "{name}: container {} keeps exiting ({} restarts{last}); see its logs",
            status.name, status.restart_count
        ))
    })
}

/// The problem a pod's report names, if any.
pub fn problem(pod: &str, report: &ProgressReport) -> Option<(&'static str, String)> {
    if report.ready {
        return None;
    }
    if let Some(error) = &report.error {
        return Some(("IngestFailed", format!("{pod}: {error}")));
    }
    if let Some(error) = &report.kafka_error {
        return Some(("KafkaUnreachable", format!("{pod}: {error}")));
    }
    report
        .waiting
        .as_ref()
        .map(|waiting| ("SourceUnavailable", format!("{pod}: {waiting}")))
}

/// The pod's report, or `None` while it does not answer with one (not started,
/// not scheduled, or gone).
pub async fn report(client: &Client, namespace: &str, pod: &str) -> Option<ProgressReport> {
    ask(&fetch(client, namespace, pod).await?).await
}

async fn fetch(client: &Client, namespace: &str, pod: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(pod)
        .await
        .ok()?
}

/// The report of a pod, at its IP and internal port as its object gives them.
async fn ask(pod: &Pod) -> Option<ProgressReport> {
    let ip: std::net::IpAddr = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("metrics"))?
        .container_port;
    let address = std::net::SocketAddr::new(ip, u16::try_from(port).ok()?);
    let body = tokio::time::timeout(ASK_WITHIN, get(address, "/readyz"))
        .await
        .ok()??;
    serde_json::from_slice(&body).ok()
}

/// The most of a `/readyz` body read: a report is a few hundred bytes.
const MAX_REPORT_BYTES: usize = 64 * 1024;

/// One plain HTTP/1.1 GET; the body whatever the status (503 carries the report
/// of a pod that has not caught up), at most [`MAX_REPORT_BYTES`]. IPv6 addresses
/// are written in brackets (`[fd00::1]:8080`).
async fn get(address: std::net::SocketAddr, path: &str) -> Option<bytes::Bytes> {
    let stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, address.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let body = http_body_util::Limited::new(response.into_body(), MAX_REPORT_BYTES);
    Some(body.collect().await.ok()?.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server on `bind` answering `body`.
    async fn serve(bind: &str, body: Vec<u8>) -> Option<std::net::SocketAddr> {
        let listener = tokio::net::TcpListener::bind(bind).await.ok()?;
        let address = listener.local_addr().ok()?;
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        });
        Some(address)
    }

    #[test]
    fn a_report_names_the_pods_problem() {
        let report = |json: &str| serde_json::from_str::<ProgressReport>(json).unwrap();
        assert_eq!(
            problem(
                "p-0",
                &report(r#"{"ready":true,"started":true,"kafka_error":"x"}"#)
            ),
            None
        );
        assert_eq!(
            problem("p-0", &report(r#"{"ready":false,"started":true}"#)),
            None,
            "replaying"
        );
        assert_eq!(
            problem(
                "p-0",
                &report(
                    r#"{"ready":false,"started":false,"kafka_error":"SASL authentication failed"}"#
                )
            ),
            Some(("KafkaUnreachable", "p-0: SASL authentication failed".into()))
        );
        assert_eq!(
            problem("p-1", &report(r#"{"ready":false,"started":false,"waiting":"topic shop.orders.v1 does not exist"}"#))
                .map(|(reason, _)| reason),
            Some("SourceUnavailable")
        );
        assert_eq!(
            problem(
                "p-0",
                &report(r#"{"ready":false,"started":true,"error":"store full"}"#)
            )
            .map(|(r, _)| r),
            Some("IngestFailed")
        );
    }

    /// Regression (issue 23): a crash-looping runtime left the experience
    /// `Progressing` with no cause until the deadline. Its Pod status names it.
    #[test]
    fn a_crash_looping_pod_is_named_with_how_it_last_ended() {
        let pod = |state: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-0"},
                "status": {"containerStatuses": [{
                    "name": "bff", "image": "facet-bff:1", "imageID": "", "ready": false,
                    "restartCount": 5, "state": state,
                    "lastState": {"terminated": {"exitCode": 101, "reason": "Error"}}
                }]}
            }))
            .unwrap()
        };
        let looping = pod(serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}));
        assert_eq!(
            crash_loop("web-0", &looping).as_deref(),
            Some("web-0: container bff keeps exiting (5 restarts; last exit code 101 (Error)); see its logs")
        );
        let starting = pod(serde_json::json!({"waiting": {"reason": "ContainerCreating"}}));
        assert_eq!(crash_loop("web-0", &starting), None);
        let running = pod(serde_json::json!({"running": {}}));
        assert_eq!(crash_loop("web-0", &running), None);
    }

    #[tokio::test]
    async fn a_report_is_read_over_ipv6_and_a_huge_body_is_not() {
        let report = br#"{"ready":false}"#.to_vec();
        // Machines without IPv6 loopback skip that half.
        if let Some(address) = serve("[::1]:0", report.clone()).await {
            assert_eq!(get(address, "/readyz").await.as_deref(), Some(&report[..]));
        }
        let address = serve("127.0.0.1:0", report.clone()).await.unwrap();
        assert_eq!(get(address, "/readyz").await.as_deref(), Some(&report[..]));
        let huge = vec![b' '; MAX_REPORT_BYTES + 1];
        let address = serve("127.0.0.1:0", huge).await.unwrap();
        assert_eq!(get(address, "/readyz").await, None);
    }
}
