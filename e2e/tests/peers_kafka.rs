//! New replicas start from a peer's image, on a real Apache Kafka broker: a pod
//! with an empty store copies a ready replica's store over the metrics port (with
//! the experience's peer token), verifies it, and consumes from its offsets. An
//! image that is truncated or corrupted is refused with a log line and a metric;
//! a peer killed mid-copy is passed over for the next; with no usable image, the
//! pod replays. Every way ends with the same rows as a replay.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use facet_e2e::kafka::Broker;
use facet_e2e::process::{facet_bff_binary, Runtime};
use facet_e2e::storefront::{produce, storefront, CUSTOMERS, ORDERS, PARTITIONS, PAYMENTS};
use facet_e2e::{log_dir, wait_for};
use serde_json::Value;

/// Enough events that copying takes long enough to be interrupted.
const EVENTS: usize = 60_000;
const TOKEN: &str = "peer-token-for-the-test";
const PROJECTIONS: [&str; 3] = ["order", "customerSummary", "customer"];

fn every_row(runtime: &Runtime) -> Vec<serde_json::Value> {
    PROJECTIONS
        .iter()
        .flat_map(|p| runtime.all_rows(p))
        .collect()
}

/// The sample with every row readable by an anonymous client, to compare stores.
fn readable_by_all(manifest: &str) -> String {
    let mut manifest: serde_yaml::Value = serde_yaml::from_str(manifest).unwrap();
    for projection in manifest["spec"]["projections"].as_sequence_mut().unwrap() {
        projection["access"] = "true".into();
    }
    serde_yaml::to_string(&manifest).unwrap()
}

fn start(
    spec: &Path,
    data: &Path,
    broker: &Broker,
    ordinal: u32,
    logs: &Path,
    token: &Path,
    peers: &[String],
) -> Runtime {
    let mut args = vec![format!("--peer-token-file={}", token.display())];
    if !peers.is_empty() {
        args.push(format!("--peers={}", peers.join(",")));
    }
    Runtime::start_with_args(
        spec,
        data,
        &broker.bootstrap(),
        &format!("storefront-web-{ordinal}"),
        &logs.join(format!("facet-{ordinal}.log")),
        &args,
    )
}

/// `GET /internal/image` of `runtime`, as a peer asks for it.
fn image_request(runtime: &Runtime, token: Option<&str>, definition: &str) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(format!(
        "http://127.0.0.1:{}/internal/image?definition={definition}",
        runtime.metrics
    ));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .unwrap();
    (status, body)
}

/// A peer that answers every request with `body` (then closes the connection).
fn fake_peer(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            // No Content-Length: the body ends where the connection does, so a
            // short body reads as an image cut off mid-copy.
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    address
}

#[test]
fn a_new_replica_starts_from_a_ready_peers_image() {
    let scene = Scene::start();
    let (a, replay_time, expected) = scene.a_replays_without_a_peer();
    let image = scene.the_image_endpoint_wants_the_token(&a);
    let b = scene.b_refuses_a_truncated_and_a_corrupted_image(&image, &expected);
    let c = scene.c_copies_b_when_a_dies_mid_copy(a, &b, replay_time, &expected);
    scene.new_events_reach_b_and_c(&b, &c, &expected);
    scene.a_running_pod_is_backed_up_and_restored(&c);
}

/// One broker with the storefront's events, the spec and the peer token.
struct Scene {
    logs: PathBuf,
    broker: Broker,
    dir: tempfile::TempDir,
    spec: PathBuf,
    token: PathBuf,
}

impl Scene {
    fn start() -> Scene {
        let logs = log_dir("peers_kafka");
        let broker = Broker::start(&logs);
        for topic in [ORDERS, PAYMENTS, CUSTOMERS] {
            broker.create_topic(topic, PARTITIONS);
        }
        produce(&broker.bootstrap(), EVENTS);
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("storefront.yaml");
        std::fs::write(&spec, readable_by_all(&storefront(true))).unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        Scene {
            logs,
            broker,
            dir,
            spec,
            token,
        }
    }

    fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A has no peer: it replays the topics.
    fn a_replays_without_a_peer(&self) -> (Runtime, Duration, Vec<Value>) {
        let started = Instant::now();
        let mut a = start(
            &self.spec,
            &self.data("a"),
            &self.broker,
            0,
            &self.logs,
            &self.token,
            &[],
        );
        a.wait_ready(Duration::from_secs(600));
        let replay_time = started.elapsed();
        let expected = every_row(&a);
        assert!(expected.len() > 10_000, "{} rows", expected.len());
        (a, replay_time, expected)
    }

    /// The endpoint wants the token, and serves only the definition it runs.
    fn the_image_endpoint_wants_the_token(&self, a: &Runtime) -> Vec<u8> {
        assert_eq!(image_request(a, None, "x").0, 401);
        assert_eq!(image_request(a, Some("another-token"), "x").0, 401);
        let (status, body) = image_request(a, Some(TOKEN), "4:another-definition");
        assert_eq!(status, 409);
        let refusal = String::from_utf8(body).unwrap();
        let definition = refusal
            .strip_prefix("this pod runs definition ")
            .unwrap_or_else(|| panic!("{refusal}"))
            .to_string();
        let (status, image) = image_request(a, Some(TOKEN), &definition);
        assert_eq!(status, 200);
        image
    }

    /// B's peers give a truncated and a corrupted image: both are refused, and B
    /// replays the topics.
    fn b_refuses_a_truncated_and_a_corrupted_image(
        &self,
        image: &[u8],
        expected: &[Value],
    ) -> Runtime {
        let truncated = fake_peer(image[..image.len() / 2].to_vec());
        let text = String::from_utf8(image.to_vec()).unwrap();
        assert!(text.contains("\"DHL\""));
        let corrupted = fake_peer(text.replacen("\"DHL\"", "\"UPS\"", 1).into_bytes());
        let mut b = start(
            &self.spec,
            &self.data("b"),
            &self.broker,
            1,
            &self.logs,
            &self.token,
            &[truncated, corrupted],
        );
        b.wait_ready(Duration::from_secs(600));
        let log = b.this_run_log();
        for outcome in ["outcome=truncated", "outcome=corrupted"] {
            assert!(log.contains(outcome), "{outcome} in\n{}", b.log_tail());
        }
        assert!(log.contains("no peer gave a usable image: replaying the topics"));
        assert_eq!(b.metric("facet_peer_images_total"), 2.0);
        assert_eq!(every_row(&b), expected, "B replayed");
        b
    }

    /// C asks A first, and A is killed while it writes its image: C copies B's.
    fn c_copies_b_when_a_dies_mid_copy(
        &self,
        mut a: Runtime,
        b: &Runtime,
        replay_time: Duration,
        expected: &[Value],
    ) -> Runtime {
        let a_address = format!("127.0.0.1:{}", a.metrics);
        let b_address = format!("127.0.0.1:{}", b.metrics);
        let a_log = self.logs.join("facet-0.log");
        const WRITING: &str = "writing the store image for a peer";
        let images_before = std::fs::read_to_string(&a_log)
            .unwrap()
            .matches(WRITING)
            .count();
        let a_pid = a.pid() as i32;
        let killer = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                let log = std::fs::read_to_string(&a_log).unwrap_or_default();
                if log.matches(WRITING).count() > images_before {
                    // At once: a whole image takes a third of a second here, and
                    // whatever part of it was sent, C must refuse it.
                    unsafe { libc::kill(a_pid, libc::SIGKILL) };
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        });
        let started = Instant::now();
        let mut c = start(
            &self.spec,
            &self.data("c"),
            &self.broker,
            2,
            &self.logs,
            &self.token,
            &[a_address.clone(), b_address.clone()],
        );
        c.wait_ready(Duration::from_secs(600));
        let copy_time = started.elapsed();
        assert!(killer.join().unwrap(), "C never asked A");
        a.kill9();
        let log = c.this_run_log();
        let from_a = log
            .lines()
            .find(|l| l.contains("no image from this peer") && l.contains(&a_address))
            .unwrap_or_else(|| panic!("A's copy did not fail:\n{}", c.log_tail()));
        // Cut off part way: the stream ends early, or the connection is reset.
        assert!(
            from_a.contains("outcome=truncated") || from_a.contains("outcome=unreachable"),
            "{from_a}"
        );
        println!("the copy from the killed peer: {from_a}");
        assert!(
            log.lines()
                .any(|l| l.contains("store copied from a peer") && l.contains(&b_address)),
            "{}",
            c.log_tail()
        );
        assert!(!log.contains("replaying the topics"), "{}", c.log_tail());
        println!(
        "{EVENTS} events: replay to ready {replay_time:.1?}; from a peer's image {copy_time:.1?} \
         ({:.1}x), after a peer killed mid-copy",
        replay_time.as_secs_f64() / copy_time.as_secs_f64()
    );
        assert_eq!(every_row(&c), expected, "C copied B's store");
        c
    }

    /// C consumes from the image's offsets: new events reach B and C alike.
    fn new_events_reach_b_and_c(&self, b: &Runtime, c: &Runtime, expected: &[Value]) {
        let producer = self.broker.producer();
        for i in 0..3 {
            let order = serde_json::json!({"type": "OrderPlaced", "orderId": format!("new-{i}"),
            "customerId": "c-1", "items": [], "total": 1.0, "at": "2026-12-03T00:00:00Z"});
            producer.send(ORDERS, &format!("new-{i}"), order.to_string().as_bytes());
        }
        producer.flush();
        wait_for(
            "B and C to apply new events",
            Duration::from_secs(120),
            || {
                let rows = every_row(b);
                rows.len() == expected.len() + 3 && rows == every_row(c)
            },
        );
    }

    /// A backup of a running pod: the CLI copies C's image, checked as it arrives,
    /// and it restores. With a wrong token nothing is written.
    fn a_running_pod_is_backed_up_and_restored(&self, c: &Runtime) {
        let backup = self.dir.path().join("c.image");
        let export = |token: &Path| {
            std::process::Command::new(facet_bff_binary())
                .args([
                    "image",
                    "export",
                    "--from",
                    &format!("127.0.0.1:{}", c.metrics),
                ])
                .arg("--spec")
                .arg(&self.spec)
                .arg("--peer-token-file")
                .arg(token)
                .arg("--out")
                .arg(&backup)
                .output()
                .unwrap()
        };
        let wrong = self.dir.path().join("wrong-token");
        std::fs::write(&wrong, "not-the-token").unwrap();
        let refused = export(&wrong);
        assert!(!refused.status.success());
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(
            message.contains("gave no image (unauthorized)"),
            "{message}"
        );
        assert!(!backup.exists());
        let exported = export(&self.token);
        assert!(
            exported.status.success(),
            "{}",
            String::from_utf8_lossy(&exported.stderr)
        );
        let restored = std::process::Command::new(facet_bff_binary())
            .args(["image", "restore", "--spec"])
            .arg(&self.spec)
            .arg("--data-dir")
            .arg(self.data("restored"))
            .arg("--image")
            .arg(&backup)
            .output()
            .unwrap();
        assert!(
            restored.status.success(),
            "{}",
            String::from_utf8_lossy(&restored.stderr)
        );
    }
}
