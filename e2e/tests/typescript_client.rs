//! The TypeScript client package (clients/typescript) as a frontend uses it, from
//! Node and in headless Chromium (the console's bundle), against two real replicas
//! on a real broker and a JWT identity provider: it subscribes and follows live
//! changes; when its replica is killed it resumes on the other without a lost or
//! repeated change; its short-lived token is refreshed in band for longer than the
//! server's leeway, on one connection per replica; a waiting command resolves only
//! once its row shows it; a retried command is produced once. A React component on
//! `useProjection` renders the rows and re-renders on a live change. Also: the
//! package builds, its pure parts pass their unit tests, and its core stays within
//! its size budget.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use facet_e2e::identity::{IdentityProvider, ISSUER};
use facet_e2e::kafka::Broker;
use facet_e2e::process::Runtime;
use facet_e2e::{log_dir, node, repo_root, KillOnDrop};

#[path = "support/browser.rs"]
mod browser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use serde_json::{json, Value};

const TOPIC: &str = "ticks.v1";
/// Rows k0..k9 advance by one `seq` per event.
const KEYS: usize = 10;
/// The scenario's rows: k0..k2499, so its snapshot comes in three pages.
const SCENARIO_ROWS: usize = 2_500;
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
    let output = node::script("bundle.mjs")
        .arg(client_dir().join("dist/index.js"))
        .arg("--gzipped-size")
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

/// Two ready replicas (A serves the console's bundle of the package, for the
/// browser) on one broker, with rows k0.. at seq 0.
struct Replicas {
    broker: Broker,
    identity: IdentityProvider,
    a: Runtime,
    b: Runtime,
    _dir: tempfile::TempDir,
}

impl Replicas {
    /// The broker's helpers run a runtime of their own: off the test's.
    async fn start_blocking(test: &'static str, rows: usize) -> Replicas {
        tokio::task::spawn_blocking(move || Replicas::start(test, rows))
            .await
            .unwrap()
    }

    fn start(test: &str, rows: usize) -> Replicas {
        let logs = log_dir(test);
        let broker = Broker::start(&logs);
        broker.create_topic(TOPIC, 3);
        let identity = IdentityProvider::start();
        let dir = tempfile::tempdir().unwrap();
        let spec_path = dir.path().join("ticker.yaml");
        std::fs::write(&spec_path, spec(&identity.jwks_uri)).unwrap();
        let producer = broker.producer();
        for key in 0..rows {
            tick(&producer, key, 0);
        }
        producer.flush();
        let start = |pod: &str| {
            let mut runtime = Runtime::start_with_args(
                &spec_path,
                &dir.path().join(pod),
                &broker.bootstrap(),
                pod,
                &logs.join(format!("{pod}.log")),
                &["--console".to_string()],
            );
            runtime.wait_ready(Duration::from_secs(60));
            runtime
        };
        let (a, b) = (start("ticker-0"), start("ticker-1"));
        Replicas {
            broker,
            identity,
            a,
            b,
            _dir: dir,
        }
    }
}

/// Where the scenario (e2e/js/client-scenario.mjs) runs: it reports steps and
/// is told the rows it must end with.
trait Driver {
    async fn next(&mut self) -> Value;
    async fn expect(&mut self, rows: &Value);
}

/// The client's scenario, checked step by step, with A killed half-way through
/// the live changes.
async fn follow_the_scenario(replicas: &mut Replicas, driver: &mut impl Driver) {
    let live = driver.next().await;
    assert_eq!(live["step"], "live", "{live}");
    assert_eq!(live["rows"], SCENARIO_ROWS, "{live}");
    assert_eq!(live["pages"], 3, "a snapshot in pages, taken whole: {live}");
    let command = driver.next().await;
    assert_eq!(command["status"], "visible", "{command}");
    assert_eq!(
        command["seqAtResolve"], 1,
        "the row shows the command when it resolves"
    );
    let retried = driver.next().await;
    assert_eq!(
        retried["first"], retried["again"],
        "one command for one key"
    );

    let producer = replicas.broker.producer();
    let rounds = 30;
    for round in 1..=rounds {
        for key in 0..KEYS {
            tick(&producer, key, round);
        }
        producer.flush();
        if round == rounds / 2 {
            replicas.a.kill9();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut expected: serde_json::Map<String, Value> = (0..SCENARIO_ROWS)
        .map(|key| {
            (
                format!("k{key}"),
                json!(if key < KEYS { rounds } else { 0 }),
            )
        })
        .collect();
    expected.insert("cmd".into(), json!(1));
    expected.insert("retry".into(), json!(1));
    let expected = Value::Object(expected);
    driver.expect(&expected).await;

    let done = driver.next().await;
    assert_eq!(done["step"], "done", "{done}");
    assert_eq!(done["rows"], expected, "no change lost");
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
    assert_eq!(records_of_command(&replicas.broker, command_id), 1);
}

/// Node runs e2e/js/facet-client-scenario.mjs: steps on stdout, rows on stdin.
struct InNode {
    _process: KillOnDrop,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Driver for InNode {
    async fn next(&mut self) -> Value {
        let line = self
            .lines
            .next()
            .expect("the client prints a step")
            .unwrap();
        println!("node: {line}");
        serde_json::from_str(&line).unwrap()
    }
    async fn expect(&mut self, rows: &Value) {
        writeln!(self.stdin, "{rows}").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_follows_live_changes_across_a_replica_kill_with_refreshed_tokens_and_commands() {
    build_package();
    let mut replicas = Replicas::start_blocking("typescript-client-node", SCENARIO_ROWS).await;
    let mut process = KillOnDrop(
        node::script("facet-client-scenario.mjs")
            .env(
                "FACET_URLS",
                format!("{},{}", replicas.a.url(""), replicas.b.url("")),
            )
            .env("FACET_TOKEN_URI", replicas.identity.user_token_uri())
            .env("FACET_TOKEN_TTL", TOKEN_TTL.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdin = process.0.stdin.take().unwrap();
    let lines = BufReader::new(process.0.stdout.take().unwrap()).lines();
    let mut driver = InNode {
        _process: process,
        stdin,
        lines,
    };
    follow_the_scenario(&mut replicas, &mut driver).await;
}

/// Chromium runs the same scenario on a page of replica A, with the package as
/// the console serves it (`/console/client.js`): steps in `window.steps`.
struct InChromium {
    browser: browser::Browser,
    seen: usize,
}

impl Driver for InChromium {
    async fn next(&mut self) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(150);
        loop {
            let step = self
                .browser
                .client
                .execute(
                    "return window.steps[arguments[0]] ?? null;",
                    vec![json!(self.seen)],
                )
                .await
                .unwrap();
            if !step.is_null() {
                println!("chromium: {step}");
                self.seen += 1;
                return step;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no step {} from the page",
                self.seen
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    async fn expect(&mut self, rows: &Value) {
        self.browser
            .client
            .execute(
                "window.expectRows(arguments[0]); return true;",
                vec![rows.clone()],
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_follows_the_same_scenario_with_the_console_bundle() {
    let mut replicas = Replicas::start_blocking("typescript-client-chromium", SCENARIO_ROWS).await;
    let browser = browser::chromium(&log_dir("typescript-client-chromium")).await;
    // A page of A's origin, so the bundle imports as the console imports it.
    browser
        .client
        .goto(&replicas.a.url("/console/client.js"))
        .await
        .unwrap();
    let scenario = std::fs::read_to_string(repo_root().join("e2e/js/client-scenario.mjs")).unwrap();
    browser
        .client
        .execute(
            r#"window.steps = [];
            const rows = new Promise((resolve) => { window.expectRows = resolve; });
            const module = URL.createObjectURL(new Blob([arguments[0]], {type: "text/javascript"}));
            Promise.all([import(module), import("/console/client.js")]).then(([{ scenario }, { createClient }]) =>
              scenario({ createClient, WebSocket, urls: arguments[1], tokenUri: arguments[2], ttl: arguments[3],
                say: (step) => window.steps.push(step), expectedRows: () => rows }))
              .catch((error) => window.steps.push({ step: "failed", error: String(error) }));
            return true;"#,
            vec![
                json!(scenario),
                json!([replicas.a.url(""), replicas.b.url("")]),
                json!(replicas.identity.user_token_uri()),
                json!(TOKEN_TTL),
            ],
        )
        .await
        .unwrap();
    let mut driver = InChromium { browser, seen: 0 };
    follow_the_scenario(&mut replicas, &mut driver).await;
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
    node::write_storefront_types(dir.path());
    let client = client_dir().join("dist/index.js");
    node::type_check(
        dir.path(),
        &program.replace("CLIENT", client.to_str().unwrap()),
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

/// The text of the `li` items of `#rows` on the page, in order.
async fn rendered_rows(client: &fantoccini::Client) -> Value {
    client
        .execute(
            "return [...document.querySelectorAll('#rows li')].map((li) => li.textContent);",
            vec![],
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_react_component_on_use_projection_renders_live_rows_in_chromium() {
    build_package();
    let replicas = Replicas::start_blocking("typescript-client-react", KEYS).await;
    let app = node::script("bundle.mjs")
        .arg(repo_root().join("e2e/js/react-projection-app.mjs"))
        .output()
        .unwrap();
    assert!(
        app.status.success(),
        "{}",
        String::from_utf8_lossy(&app.stderr)
    );
    let browser = browser::chromium(&log_dir("typescript-client-react")).await;
    let client = &browser.client;
    client
        .goto(&replicas.a.url("/console/client.js"))
        .await
        .unwrap();
    client
        .execute(
            r#"const module = URL.createObjectURL(new Blob([arguments[0]], {type: "text/javascript"}));
            document.body.innerHTML = '<div id="app"></div>';
            import(module).then(({ mount }) => mount(document.getElementById("app"), { url: arguments[1], token: arguments[2] }));
            return true;"#,
            vec![
                json!(String::from_utf8(app.stdout).unwrap()),
                json!(replicas.a.url("")),
                json!(replicas.identity.token("ada", "ticker")),
            ],
        )
        .await
        .unwrap();

    let initial: Vec<String> = (0..KEYS).map(|key| format!("k{key}=0")).collect();
    let mut expected = json!(initial);
    for step in 0..2 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = rendered_rows(client).await;
            if rows == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "rendered {rows}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = client
            .execute(
                "return document.getElementById('status').textContent;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(status, "live");
        if step == 0 {
            // A live change re-renders the component.
            let producer = replicas.broker.producer();
            tick(&producer, 3, 7);
            producer.flush();
            expected[3] = json!("k3=7");
        }
    }
}
