//! The TypeScript client package (clients/typescript) as a frontend uses it, from
//! Node against two real replicas on a real broker and a JWT identity provider:
//! it subscribes and follows live changes; when its replica is killed it resumes
//! on the other without a lost or repeated change; its short-lived token is
//! refreshed in band for longer than the server's leeway, on one connection per
//! replica; a waiting command resolves only once its row shows it; a retried
//! command is produced once. Also: the package builds, its pure parts pass their
//! unit tests, and its core stays within its size budget.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use facet_e2e::identity::{IdentityProvider, ISSUER};
use facet_e2e::kafka::Broker;
use facet_e2e::process::Runtime;
use facet_e2e::{log_dir, node, repo_root, KillOnDrop};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use serde_json::{json, Value};

const TOPIC: &str = "ticks.v1";
/// Rows k0..k9 advance by one `seq` per event.
const KEYS: usize = 10;
/// Seconds the client's tokens live.
const TOKEN_TTL: u64 = 4;
/// The core's budget: bundled, minified and gzipped.
const CORE_BUDGET_BYTES: usize = 8 * 1024;

fn spec(jwks_uri: &str) -> String {
    format!(
        r#"apiVersion: facet.dev/v1alpha1
kind: FrontendExperience
metadata: {{name: ticker, namespace: e2e}}
spec:
  kafka: {{bootstrapServers: unused:9092}}
  sources:
    - {{name: ticks, topic: {TOPIC}}}
  projections:
    - name: counter
      key: event.id
      rules:
        - source: ticks
          upsert: {{id: event.id, owner: event.owner, seq: event.seq}}
      fields:
        id: {{type: string}}
        owner: {{type: string}}
        seq: {{type: integer}}
      access: row.owner == auth.sub
  commands:
    - name: bump
      input: {{id: {{type: string}}, seq: {{type: integer}}}}
      allow: "true"
      topic: {TOPIC}
      key: input.id
      value: '{{"id": input.id, "owner": auth.sub, "seq": input.seq}}'
  auth:
    jwt:
      issuer: {ISSUER}
      audiences: [ticker]
      jwksUri: {jwks_uri}
      allowInsecureJwksUri: true
"#
    )
}

fn client_dir() -> std::path::PathBuf {
    repo_root().join("clients/typescript")
}

/// Builds the package to dist/ (once per test process).
fn build_package() {
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let output = node::tsc().arg("-p").arg(client_dir()).output().unwrap();
        assert!(
            output.status.success(),
            "the client package builds:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
    });
}

#[test]
fn the_package_builds_passes_its_unit_tests_and_keeps_its_size_budget() {
    build_package();
    let output = Command::new("node")
        .arg("--test")
        .arg(client_dir().join("test"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let bundle = node::script("bundle.mjs")
        .arg(client_dir().join("dist/index.js"))
        .output()
        .unwrap();
    let served = repo_root().join("bff-runtime/src/serve/console-client.js");
    assert!(
        bundle.stdout == std::fs::read(&served).unwrap(),
        "{} is the package as it is now: run `make console-client`",
        served.display()
    );
    let output = node::script("bundle-size.mjs")
        .arg(client_dir().join("dist/index.js"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    let bytes: usize = said.trim().parse().unwrap_or_else(|_| panic!("{said}"));
    println!("core: {bytes} bytes minified and gzipped (budget {CORE_BUDGET_BYTES})");
    assert!(bytes > 1000 && bytes < CORE_BUDGET_BYTES, "{bytes} bytes");
}

/// Records of the topic whose `facet-command-id` header is `command_id`.
fn records_of_command(broker: &Broker, command_id: &str) -> usize {
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "typescript-client-count")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut found = 0;
    let mut idle = 0;
    while idle < 30 {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                idle = 0;
                let id = message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "facet-command-id"))
                    .and_then(|h| h.value);
                found += usize::from(id == Some(command_id.as_bytes()));
            }
            _ => idle += 1,
        }
    }
    found
}

fn tick(producer: &facet_e2e::kafka::TestProducer, key: usize, seq: u64) {
    let id = format!("k{key}");
    let event = json!({"id": id, "owner": "ada", "seq": seq}).to_string();
    producer.send(TOPIC, &id, event.as_bytes());
}

#[test]
fn node_follows_live_changes_across_a_replica_kill_with_refreshed_tokens_and_commands() {
    build_package();
    let logs = log_dir("typescript-client");
    let broker = Broker::start(&logs);
    broker.create_topic(TOPIC, 3);
    let identity = IdentityProvider::start();
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("ticker.yaml");
    std::fs::write(&spec_path, spec(&identity.jwks_uri)).unwrap();

    let producer = broker.producer();
    for key in 0..KEYS {
        tick(&producer, key, 0);
    }
    producer.flush();
    let start = |pod: &str| {
        let mut runtime = Runtime::start(
            &spec_path,
            &dir.path().join(pod),
            &broker.bootstrap(),
            pod,
            &logs.join(format!("{pod}.log")),
        );
        runtime.wait_ready(Duration::from_secs(60));
        runtime
    };
    let mut a = start("ticker-0");
    let b = start("ticker-1");

    let mut client = KillOnDrop(
        node::script("facet-client-scenario.mjs")
            .env("FACET_URLS", format!("{},{}", a.url(""), b.url("")))
            .env("FACET_TOKEN_URI", identity.user_token_uri())
            .env("FACET_TOKEN_TTL", TOKEN_TTL.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = client.0.stdin.take().unwrap();
    let mut lines = BufReader::new(client.0.stdout.take().unwrap()).lines();
    let mut next = || -> Value {
        let line = lines.next().expect("the client prints a step").unwrap();
        println!("client: {line}");
        serde_json::from_str(&line).unwrap()
    };

    let live = next();
    assert_eq!(
        (live["step"].as_str(), live["rows"].as_u64()),
        (Some("live"), Some(KEYS as u64))
    );
    let command = next();
    assert_eq!(command["status"], "visible", "{command}");
    assert_eq!(
        command["seqAtResolve"], 1,
        "the row shows the command when it resolves"
    );
    let retried = next();
    assert_eq!(
        retried["first"], retried["again"],
        "one command for one key"
    );

    // Live changes, with replica A killed half-way through them.
    let rounds = 30;
    for round in 1..=rounds {
        for key in 0..KEYS {
            tick(&producer, key, round);
        }
        producer.flush();
        if round == rounds / 2 {
            a.kill9();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut expected: serde_json::Map<String, Value> = (0..KEYS)
        .map(|key| (format!("k{key}"), json!(rounds)))
        .collect();
    expected.insert("cmd".into(), json!(1));
    expected.insert("retry".into(), json!(1));
    writeln!(stdin, "{}", Value::Object(expected.clone())).unwrap();

    let done = next();
    assert_eq!(done["step"], "done", "{done}");
    assert_eq!(done["rows"], Value::Object(expected), "no change lost");
    assert_eq!(
        done["problems"],
        json!([]),
        "no change repeated or out of order"
    );
    assert_eq!(
        done["snapshots"], 1,
        "the resume sent what was missed, not everything"
    );
    assert_eq!(done["status"], "live");
    assert_eq!(done["opens"], 2, "one connection to A, one to B: {done}");
    let codes = done["closeCodes"].as_array().unwrap();
    assert!(
        !codes.contains(&json!(4401)),
        "never closed for its token: {done}"
    );
    let reasons = &done["tokenReasons"];
    assert!(
        reasons["expiring"].as_u64().unwrap_or(0) >= 5,
        "refreshed in band: {done}"
    );
    assert!(reasons.get("refused").is_none(), "{done}");

    let command_id = retried["first"].as_str().unwrap();
    assert_eq!(records_of_command(&broker, command_id), 1);
}

const TYPED_APP: &str = r#"import { createClient } from "CLIENT";
import type { FacetSchema } from "./facet.js";

const client = createClient<FacetSchema>({ url: "http://localhost:8080" });
const orders = client.subscribe("order", { where: { status: "placed" } });
const first = orders.rows.rows()[0];
export const seen = [first?.status, first?.customer?.tier];
export const sent = client.command("cancelOrder", { orderId: "o-1" });
"#;

/// `tsc --noEmit --strict` on `program` beside the storefront's generated types.
fn type_check(program: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let types = Command::new(facet_e2e::process::facet_bff_binary())
        .arg("schema")
        .arg(repo_root().join("config/samples/storefront.yaml"))
        .arg("--typescript")
        .output()
        .unwrap();
    assert!(types.status.success());
    std::fs::write(dir.path().join("facet.ts"), &types.stdout).unwrap();
    let client = client_dir().join("dist/index.js");
    let program = program.replace("CLIENT", client.to_str().unwrap());
    std::fs::write(dir.path().join("app.ts"), program).unwrap();
    let output = node::tsc()
        .args([
            "--noEmit",
            "--strict",
            "--module",
            "nodenext",
            "--target",
            "es2022",
            "--lib",
            "es2022,dom",
        ])
        .arg(dir.path().join("app.ts"))
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
    )
}

#[test]
fn the_generated_types_type_the_client() {
    build_package();
    let (ok, said) = type_check(TYPED_APP);
    assert!(ok, "the typed program checks:\n{said}");
    for (right, wrong, error) in [
        (
            r#"subscribe("order","#,
            r#"subscribe("orders","#,
            r#""orders""#,
        ),
        (r#"status: "placed""#, r#"status: "lost""#, r#""lost""#),
        ("first?.status,", "first?.statuz,", "'statuz'"),
        (r#"{ orderId: "o-1" }"#, r#"{ orderid: "o-1" }"#, "orderid"),
    ] {
        let (ok, said) = type_check(&TYPED_APP.replace(right, wrong));
        assert!(!ok && said.contains(error), "`{wrong}` is refused:\n{said}");
    }
}
