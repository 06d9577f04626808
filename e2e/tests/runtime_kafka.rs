//! The runtime against a real Apache Kafka broker: ordering per key, poison events,
//! `kill -9` in the middle of a batch, clean restarts, rebuilds, a broker restart.
//! One broker serves the whole sequence (it takes seconds to start).

use std::path::{Path, PathBuf};
use std::time::Duration;

use facet_e2e::identity::{IdentityProvider, KAFKA_CLIENT_ID, KAFKA_CLIENT_SECRET};
use facet_e2e::kafka::Broker;
use facet_e2e::process::Runtime;
use facet_e2e::{log_dir, wait_for};
use serde_json::{json, Value};

const KEYS: usize = 20;
const TICKS_PER_KEY: i64 = 500;
const POISON: usize = KEYS * TICKS_PER_KEY as usize;

fn counter_spec(extra_field: bool) -> String {
    let (field, upsert) = if extra_field {
        (
            "        doubled: {type: integer}\n",
            ", doubled: row.doubled + 2",
        )
    } else {
        ("", "")
    };
    format!(
        r#"apiVersion: facet.dev/v1alpha1
kind: FrontendExperience
metadata: {{name: counters, namespace: e2e}}
spec:
  kafka: {{bootstrapServers: "unused:9092", deadLetterTopic: e2e.dlq}}
  sources: [{{name: ticks, topic: e2e.ticks}}]
  projections:
    - name: counter
      key: event.k
      rules:
        - source: ticks
          when: event.type == "tick"
          upsert: {{k: event.k, count: row.count + 1, last: event.n, outOfOrder: "row.outOfOrder + (event.n == row.last + 1 ? 0 : 1)"{upsert}}}
      fields:
        k: {{type: string}}
        count: {{type: integer}}
        last: {{type: integer}}
        outOfOrder: {{type: integer}}
{field}  auth: {{anonymous: true}}
  store: {{batch: {{maxEvents: 200, maxDelayMs: 20}}}}
"#
    )
}

fn tick(key: usize, n: i64) -> Vec<u8> {
    json!({"type": "tick", "k": format!("k{key:02}"), "n": n})
        .to_string()
        .into_bytes()
}

/// Three kinds of poison, one per reason the runtime counts.
fn poison(i: usize) -> Vec<u8> {
    match i % 3 {
        0 => b"{this is not json".to_vec(),
        1 => json!({"type": "tick", "n": 1}).to_string().into_bytes(),
        _ => json!({"type": "tick", "k": "k00", "n": "not a number"})
            .to_string()
            .into_bytes(),
    }
}

fn counters(runtime: &Runtime) -> Vec<Value> {
    runtime.all_rows("counter")
}

fn dead_letters(broker: &Broker) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "e2e-dlq-check")
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks("e2e.dlq", 0, Duration::from_secs(10))
        .unwrap();
    high - low
}

#[test]
fn runtime_against_a_real_kafka_broker() {
    let mut scene = Scene::start();
    scene.produce_ticks_with_poison();
    let (a, after_crash) = scene.kill_a_mid_replay_then_resume();
    let b = scene.b_replays_the_same(&after_crash);
    let b = scene.export_lose_the_volume_restore(b, &after_crash);
    let a = scene.a_clean_stop_resumes(a);
    let a = scene.a_changed_definition_rebuilds(a);
    scene.b_outlives_a_broker_restart(&b);
    drop(a);
    scene.b_consumes_a_new_partition(&b);
    scene.tls_and_scram_from_a_secret(&b);
    scene.oauthbearer_from_a_secret(&b);
    scene.dev_mode_on_the_real_broker();
}

/// What the whole sequence shares: one broker (it takes seconds to start), the
/// identity provider its OAUTHBEARER listener trusts, and a working directory.
struct Scene {
    logs: PathBuf,
    identity: IdentityProvider,
    broker: Broker,
    work: tempfile::TempDir,
    spec: PathBuf,
}

impl Scene {
    fn start() -> Scene {
        let logs = log_dir("runtime_kafka");
        let identity = IdentityProvider::start();
        let broker = Broker::start_with_oauth(&logs, &identity.jwks_uri);
        broker.create_topic("e2e.ticks", 3);
        broker.create_topic("e2e.dlq", 1);
        let work = tempfile::tempdir().unwrap();
        let spec = work.path().join("counters.yaml");
        std::fs::write(&spec, counter_spec(false)).unwrap();
        Scene {
            logs,
            identity,
            broker,
            work,
            spec,
        }
    }

    /// Runtime A: the replica that is killed, stopped and rebuilt.
    fn start_a(&self, spec: &Path) -> Runtime {
        Runtime::start(
            spec,
            &self.work.path().join("a"),
            &self.broker.bootstrap(),
            "counters-0",
            &self.logs.join("runtime-a.log"),
        )
    }

    /// 10,000 ordered ticks over 20 keys, each followed by a poison event.
    fn produce_ticks_with_poison(&self) {
        let producer = self.broker.producer();
        let mut poisoned = 0;
        for n in 1..=TICKS_PER_KEY {
            for key in 0..KEYS {
                producer.send("e2e.ticks", &format!("k{key:02}"), &tick(key, n));
                producer.send("e2e.ticks", &format!("k{key:02}"), &poison(poisoned));
                poisoned += 1;
            }
        }
        producer.flush();
    }

    /// Runtime A is killed with SIGKILL at several points of its replay (batches
    /// are being applied while the one before is written), then restarted: no
    /// loss, no duplicate, in order per key.
    fn kill_a_mid_replay_then_resume(&self) -> (Runtime, Vec<Value>) {
        let mut kills = 0;
        for kill_after in [2000.0, 500.0, 3000.0] {
            let mut a = self.start_a(&self.spec);
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            let caught_up = loop {
                if a.metric("facet_events_applied_total") >= kill_after {
                    break false;
                }
                if matches!(a.get("/readyz"), Some((200, _))) {
                    break true;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "runtime A applies nothing"
                );
                std::thread::sleep(Duration::from_millis(2));
            };
            a.kill9();
            if caught_up {
                break;
            }
            kills += 1;
        }
        assert!(kills >= 1, "runtime A was killed mid-replay");
        let mut a = self.start_a(&self.spec);
        a.wait_ready(Duration::from_secs(300));
        let after_crash = counters(&a);
        assert_eq!(after_crash.len(), KEYS);
        for row in &after_crash {
            assert_eq!(
                row["row"]["count"], TICKS_PER_KEY,
                "no loss, no duplicates: {row}"
            );
            assert_eq!(row["row"]["last"], TICKS_PER_KEY, "{row}");
            assert_eq!(
                row["row"]["outOfOrder"], 0,
                "applied in order per key: {row}"
            );
        }
        (a, after_crash)
    }

    /// Runtime B replays the same topics from scratch: the same projection, every
    /// poison event counted by reason and dead-lettered.
    fn b_replays_the_same(&self, after_crash: &[Value]) -> Runtime {
        let mut b = Runtime::start(
            &self.spec,
            &self.work.path().join("b"),
            &self.broker.bootstrap(),
            "counters-1",
            &self.logs.join("runtime-b.log"),
        );
        b.wait_ready(Duration::from_secs(300));
        assert_eq!(
            counters(&b),
            after_crash,
            "a crashed-and-resumed store equals a replay"
        );
        assert_eq!(
            b.metric("facet_events_applied_total"),
            (KEYS as i64 * TICKS_PER_KEY) as f64
        );
        assert_eq!(
            b.metric("facet_events_rejected_total"),
            POISON as f64,
            "every poison event counted"
        );
        for reason in ["undecodable", "no_key", "rule_error"] {
            assert!(
                b.metric(&format!(
                    "facet_events_rejected_total{{reason=\"{reason}\"}}"
                )) > 0.0,
                "reason {reason} counted"
            );
        }
        // Runtime A's crashed run, its resumed run and B each sent theirs (at least once).
        wait_for("dead letters to arrive", Duration::from_secs(30), || {
            dead_letters(&self.broker) >= 2 * POISON as i64
        });
        b
    }

    /// Backup and restore: B's store is exported, its volume lost, and a new store
    /// restored from the image resumes at the image's offsets, equal to a replay.
    /// The restored runtime is B from then on.
    fn export_lose_the_volume_restore(&self, mut b: Runtime, after_crash: &[Value]) -> Runtime {
        b.terminate();
        let dir_b = self.work.path().join("b");
        let image = self.work.path().join("b.image");
        let cli = |args: &[&std::ffi::OsStr]| {
            let output = std::process::Command::new(facet_e2e::process::facet_bff_binary())
                .args(args)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        cli(&[
            "image".as_ref(),
            "export".as_ref(),
            "--data-dir".as_ref(),
            dir_b.as_os_str(),
            "--out".as_ref(),
            image.as_os_str(),
        ]);
        std::fs::remove_dir_all(&dir_b).unwrap();
        let dir_c = self.work.path().join("c");
        cli(&[
            "image".as_ref(),
            "restore".as_ref(),
            "--spec".as_ref(),
            self.spec.as_os_str(),
            "--data-dir".as_ref(),
            dir_c.as_os_str(),
            "--image".as_ref(),
            image.as_os_str(),
        ]);
        let mut c = Runtime::start(
            &self.spec,
            &dir_c,
            &self.broker.bootstrap(),
            "counters-1",
            &self.logs.join("runtime-c.log"),
        );
        c.wait_ready(Duration::from_secs(120));
        assert_eq!(
            counters(&c),
            after_crash,
            "a restored store equals a replay"
        );
        assert_eq!(
            c.metric("facet_events_applied_total"),
            0.0,
            "resumed from the image's offsets, nothing replayed"
        );
        c
    }

    /// A clean stop resumes from the stored offsets: only new events are read.
    fn a_clean_stop_resumes(&self, mut a: Runtime) -> Runtime {
        let producer = self.broker.producer();
        a.terminate();
        for n in TICKS_PER_KEY + 1..=TICKS_PER_KEY + 100 {
            producer.send("e2e.ticks", "k00", &tick(0, n));
        }
        producer.flush();
        let mut a = self.start_a(&self.spec);
        a.wait_ready(Duration::from_secs(120));
        assert_eq!(
            a.metric("facet_events_applied_total"),
            100.0,
            "resumed, not replayed"
        );
        let k00 = a.get("/v1/counter/k00").unwrap().1;
        assert_eq!(k00["count"], TICKS_PER_KEY + 100);
        assert_eq!(k00["outOfOrder"], 0);
        a
    }

    /// A changed projection definition rebuilds the store from the earliest offset.
    fn a_changed_definition_rebuilds(&self, mut a: Runtime) -> Runtime {
        a.terminate();
        let spec2 = self.work.path().join("counters-v2.yaml");
        std::fs::write(&spec2, counter_spec(true)).unwrap();
        let mut a = self.start_a(&spec2);
        a.wait_ready(Duration::from_secs(300));
        assert_eq!(
            a.metric("facet_events_applied_total"),
            (KEYS as i64 * TICKS_PER_KEY + 100) as f64
        );
        assert_eq!(
            a.get("/v1/counter/k00").unwrap().1["doubled"],
            2 * (TICKS_PER_KEY + 100)
        );
        a
    }

    /// The broker crashes and comes back: B carries on without a restart of its own.
    fn b_outlives_a_broker_restart(&mut self, b: &Runtime) {
        self.broker.restart();
        let producer = self.broker.producer();
        for n in TICKS_PER_KEY + 1..=TICKS_PER_KEY + 50 {
            producer.send("e2e.ticks", "k01", &tick(1, n));
        }
        producer.flush();
        wait_for(
            "runtime B to apply events after the broker restart",
            Duration::from_secs(120),
            || {
                b.get("/v1/counter/k01")
                    .is_some_and(|(_, row)| row["count"] == TICKS_PER_KEY + 50)
            },
        );
        assert_eq!(b.get("/v1/counter/k01").unwrap().1["outOfOrder"], 0);
    }

    /// The topic grows a partition while B runs: B consumes it without a restart.
    fn b_consumes_a_new_partition(&self, b: &Runtime) {
        let applied_before_growth = b.metric("facet_events_applied_total");
        self.broker.add_partitions("e2e.ticks", 4);
        let producer = self.broker.producer();
        for n in 1..=10 {
            producer.send_to("e2e.ticks", 3, "k99", &tick(99, n));
        }
        producer.flush();
        wait_for(
            "runtime B to consume the new partition",
            Duration::from_secs(60),
            || {
                b.get("/v1/counter/k99")
                    .is_some_and(|(_, row)| row["count"] == 10)
            },
        );
        assert_eq!(
            b.metric("facet_events_applied_total"),
            applied_before_growth + 10.0,
            "the old partitions went on where they were: nothing read twice"
        );
    }

    /// A runtime whose Kafka properties come from a mounted Secret.
    fn with_secret(
        &self,
        (bootstrap, properties): (String, Vec<(String, String)>),
        name: &str,
    ) -> Runtime {
        let secret = self.work.path().join(format!("{name}-secret"));
        std::fs::create_dir_all(&secret).unwrap();
        for (property, value) in properties {
            std::fs::write(secret.join(property), value).unwrap();
        }
        Runtime::start_with_secret(
            &self.spec,
            &self.work.path().join(name),
            &bootstrap,
            Some(&secret),
            &format!("{name}-0"),
            &self.logs.join(format!("runtime-{name}.log")),
        )
    }

    /// A broker that wants TLS and SASL/SCRAM, as managed Kafka services do: the
    /// properties come from the mounted Secret. The same topics give the same rows;
    /// a wrong password keeps the pod unready and says why.
    fn tls_and_scram_from_a_secret(&self, b: &Runtime) {
        let secured = |password: &str, name: &str| {
            self.with_secret(self.broker.secure_bootstrap(password), name)
        };
        let mut tls = secured(facet_e2e::kafka::SCRAM_PASSWORD, "tls");
        tls.wait_ready(Duration::from_secs(300));
        assert_eq!(counters(&tls), counters(b), "the same rows over SASL_SSL");
        let refused = secured("not-the-password", "refused");
        let login_refused = |readiness: &Value| {
            readiness["kafka_error"]
                .as_str()
                .is_some_and(|e| e.contains("Authentication failed"))
        };
        wait_for(
            "readiness to report the refused login",
            Duration::from_secs(60),
            || {
                refused
                    .readiness()
                    .is_some_and(|(_, readiness)| login_refused(&readiness))
            },
        );
        let (status, readiness) = refused.readiness().unwrap();
        let (public_status, public) = refused.get("/readyz").unwrap();
        assert_eq!(
            (public_status, public["ready"].as_bool()),
            (503, Some(false))
        );
        assert!(
    public.get("kafka_error").is_none() && !public.to_string().contains("e2e.ticks"),
    "regression (issue 24): the public /readyz tells no one the topics or Kafka's errors: {public}"
);
        assert_eq!(
            status, 503,
            "not ready without access to Kafka: {readiness}"
        );
        drop((tls, refused));
    }

    /// A broker that takes only OAUTHBEARER tokens (Kafka's own validator, against
    /// the identity provider's JWKS): the runtime fetches its token from the token
    /// endpoint with the client id and secret of its Secret (regression, issue 24:
    /// librdkafka was built without curl, so `sasl.oauthbearer.method=oidc` could
    /// not work). A wrong client secret gets no token, and readiness says so.
    fn oauthbearer_from_a_secret(&self, b: &Runtime) {
        let oauth = |secret: &str, name: &str| {
            self.with_secret(
                self.broker
                    .oauth_bootstrap(&self.identity.token_uri, KAFKA_CLIENT_ID, secret),
                name,
            )
        };
        let mut oidc = oauth(KAFKA_CLIENT_SECRET, "oidc");
        oidc.wait_ready(Duration::from_secs(300));
        assert_eq!(
            counters(&oidc),
            counters(b),
            "the same rows over OAUTHBEARER"
        );
        assert!(
            self.identity.tokens_issued() >= 1,
            "the runtime logged in with a token from the token endpoint"
        );
        // What the brokers keep, asked with the pod's own client (the operator reads it
        // for `Replayable`).
        wait_for("the retention report", Duration::from_secs(60), || {
            oidc.readiness()
                .is_some_and(|(_, report)| report["retention"].is_array())
        });
        let (_, report) = oidc.readiness().unwrap();
        assert_eq!(report["retention"][0]["topic"], "e2e.ticks", "{report}");
        assert_eq!(
            report["retention"][0]["cleanup_policy"], "delete",
            "{report}"
        );
        assert_eq!(
            report["retention"][0]["earliest"].as_array().map(Vec::len),
            Some(4),
            "{report}"
        );
        let no_token = oauth("not-the-secret", "no-token");
        wait_for(
            "readiness to report that no token was issued",
            Duration::from_secs(60),
            || {
                no_token.readiness().is_some_and(|(status, readiness)| {
                    status == 503
                        && readiness["kafka_error"].as_str().is_some_and(|e| {
                            e.contains("OAUTHBEARER token") && e.contains("invalid_client")
                        })
                })
            },
        );
        drop((oidc, no_token));
    }

    /// `facet-bff dev --kafka` uses a real broker: it creates the topics, loads the
    /// sample's events and serves them.
    fn dev_mode_on_the_real_broker(&self) {
        let http = facet_e2e::free_port();
        let log = std::fs::File::create(self.logs.join("dev-kafka.log")).unwrap();
        let _dev = facet_e2e::KillOnDrop(
            std::process::Command::new(facet_e2e::process::facet_bff_binary())
                .current_dir(facet_e2e::repo_root())
                .args([
                    "dev",
                    "config/samples/blog-post.yaml",
                    "--kafka",
                    &self.broker.bootstrap(),
                ])
                .args(["--http", &format!("127.0.0.1:{http}")])
                .args([
                    "--metrics",
                    &format!("127.0.0.1:{}", facet_e2e::free_port()),
                ])
                .arg("--data-dir")
                .arg(self.work.path().join("dev"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let posts = format!("http://127.0.0.1:{http}/v1/postPage/p-1");
        wait_for(
            "dev mode on the real broker to serve the sample",
            Duration::from_secs(60),
            || {
                ureq::get(&posts)
                    .call()
                    .ok()
                    .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                    .is_some_and(|row| {
                        row["commentCount"] == 3 && row["title"] == "Event-driven BFFs, declared"
                    })
            },
        );
    }
}
