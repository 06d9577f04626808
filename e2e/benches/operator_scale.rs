//! The operator with many experiences, against a real etcd and kube-apiserver (with
//! the StatefulSet and garbage-collector controllers, no kubelet and no broker: the
//! pods never run, as in a cluster whose brokers are out of reach).
//!
//! Applies `FACET_BENCH_EXPERIENCES` (default 1,000) copies of the blog sample over
//! ten namespaces at once and measures, for the release operator:
//! - the time until every experience has its StatefulSet, made by the StatefulSet
//!   controller, and a status that says so;
//! - the operator's peak RSS and CPU until then;
//! - the API requests it made per experience (from the API server's audit log);
//! - then a quiet minute, in which nothing changes: its requests and CPU.
//!
//! Reproduce:
//! `cargo build --release -p facet-operator && cargo bench -p facet-e2e --bench operator_scale`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use facet_e2e::cluster::ControlPlane;
use facet_e2e::operator::{install_chart, start_operator_binary, OPERATOR_SA};
use facet_e2e::process::{cpu_time, peak_rss_bytes};
use facet_e2e::{log_dir, repo_root, wait_for};

const NAMESPACES: usize = 10;

fn main() {
    let experiences: usize = std::env::var("FACET_BENCH_EXPERIENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let binary = std::env::var_os("FACET_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/facet-operator"));
    assert!(
        binary.exists(),
        "{} is missing: cargo build --release -p facet-operator",
        binary.display()
    );
    let logs = log_dir("bench-operator-scale");
    let cluster = ControlPlane::start_audited(&logs);
    install_chart(&cluster);
    for n in 0..NAMESPACES {
        cluster.kubectl_ok(&["create", "namespace", &format!("scale-{n}")]);
    }
    // The chart's lease (15 s), not the tests' 4 s: an API server this busy may take
    // seconds to answer a renewal.
    let lease = [("FACET_LEASE_DURATION_SECONDS", "15")];
    let mut operator = start_operator_binary(&cluster, &logs, "operator-scale", &binary, &lease);
    let pid = operator.process.0.id();
    let audit = logs.join("audit.log");
    let before = requests(&audit);

    let started = Instant::now();
    let sample = std::fs::read_to_string(repo_root().join("config/samples/blog-post.yaml"))
        .unwrap()
        // Nothing listens there: the pods are never run anyway.
        .replace("kafka.kafka.svc:9092", "127.0.0.1:9");
    for n in 0..NAMESPACES {
        let documents: Vec<String> = (0..experiences)
            .filter(|i| i % NAMESPACES == n)
            .map(|i| {
                sample
                    .replace("name: blog-post-page", &format!("name: blog-{i}"))
                    .replace("namespace: blog", &format!("namespace: scale-{n}"))
            })
            .collect();
        cluster.apply_ok(&documents.join("\n---\n"));
    }
    wait_for(
        "every experience's status to show its StatefulSet",
        Duration::from_secs(1800),
        || settled(&cluster) >= experiences,
    );
    let settle = started.elapsed();
    let cpu_to_settle = cpu_time(pid);
    let settled_requests = requests(&audit);
    assert!(operator.running(), "the operator exited");

    std::thread::sleep(Duration::from_secs(60));
    let quiet_cpu = cpu_time(pid) - cpu_to_settle;
    let quiet = difference(&requests(&audit), &settled_requests);
    let to_settle = difference(&settled_requests, &before);
    let peak = peak_rss_bytes(pid);

    println!("\n| experiences | to settle | peak RSS | CPU to settle | requests per experience to settle | quiet minute: requests | quiet minute: CPU |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {experiences} | {:.1} s | {} MB | {:.1} s | {} | {} | {:.1} s |",
        settle.as_secs_f64(),
        peak / 1_000_000,
        cpu_to_settle.as_secs_f64(),
        per_experience(&to_settle, experiences),
        listed(&quiet),
        quiet_cpu.as_secs_f64(),
    );
}

/// Experiences whose status reports their StatefulSet with its one replica made:
/// the operator and the StatefulSet controller are both done with them (until
/// then the set's status moves, and the operator rightly follows).
fn settled(cluster: &ControlPlane) -> usize {
    let statuses = cluster.kubectl_ok(&[
        "get",
        "fx",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.status.observedGeneration}/{.status.replicas}{\"\\n\"}{end}",
    ]);
    statuses.lines().filter(|l| *l == "1/1").count()
}

/// The operator's requests so far, by verb and resource, from the audit log
/// (one event per request once its response is complete; watches when they start).
fn requests(audit: &Path) -> BTreeMap<String, usize> {
    let mut counted = BTreeMap::new();
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let user = event["impersonatedUser"]["username"].as_str();
        let (verb, stage) = (
            event["verb"].as_str().unwrap_or(""),
            event["stage"].as_str(),
        );
        let counted_stage = match verb {
            "watch" => stage == Some("ResponseStarted"),
            _ => stage == Some("ResponseComplete"),
        };
        if user != Some(OPERATOR_SA) || !counted_stage {
            continue;
        }
        let mut resource = event["objectRef"]["resource"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if let Some(sub) = event["objectRef"]["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        *counted.entry(format!("{verb} {resource}")).or_default() += 1;
    }
    counted
}

fn difference(
    now: &BTreeMap<String, usize>,
    then: &BTreeMap<String, usize>,
) -> BTreeMap<String, usize> {
    now.iter()
        .map(|(k, n)| {
            (
                k.clone(),
                n.saturating_sub(then.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn per_experience(counts: &BTreeMap<String, usize>, experiences: usize) -> String {
    let by_verb = counts
        .iter()
        .fold(BTreeMap::<&str, usize>::new(), |mut verbs, (k, n)| {
            *verbs.entry(k.split(' ').next().unwrap()).or_default() += n;
            verbs
        });
    by_verb
        .iter()
        .map(|(verb, n)| format!("{verb} {:.1}", *n as f64 / experiences as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn listed(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
