//! Commands against a real Kafka broker, with a small domain service in the test
//! that consumes the command topic and emits the events it leads to, copying the
//! `facet-command-id` header. A command that waits answers once the projection
//! shows its effect, with the position to read from, and subscribers get the
//! change; a retry with the same idempotency key produces once; refused commands
//! produce nothing; the stock graphql-ws client and plain HTTP send mutations;
//! the native WebSocket acknowledges twice; without Kafka a command gets 503.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use facet_e2e::identity::{IdentityProvider, ISSUER};
use facet_e2e::kafka::Broker;
use facet_e2e::process::Runtime;
use facet_e2e::{log_dir, next_json, wait_for};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{json, Value};

const COMMANDS: &str = "shop.commands.v1";
const ORDERS: &str = "shop.orders.v1";

/// The storefront sample on this broker and identity provider, with a command
/// rate of one a minute per user after a burst of 25.
fn spec(jwks_uri: &str) -> String {
    let sample =
        std::fs::read_to_string(facet_e2e::repo_root().join("config/samples/storefront.yaml"))
            .unwrap();
    sample
        .replace(
            "https://id.example.com/.well-known/jwks.json",
            &format!("{jwks_uri}\n      allowInsecureJwksUri: true"),
        )
        .replace(
            "issuer: https://id.example.com",
            &format!("issuer: {ISSUER}"),
        )
        .replace(
            "    cacheControl: private, max-age=5",
            "    cacheControl: private, max-age=5\n    limits: {commandsPerUserPerMinute: 1, commandBurst: 25}",
        )
}

/// The order service: for each CancelOrder it emits OrderCancelled with the
/// command's id, as a service following the contract does.
fn domain_service(bootstrap: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "order-service")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&[COMMANDS]).unwrap();
        let producer: ThreadedProducer<DefaultProducerContext> =
            rdkafka::config::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .unwrap();
        let mut handled = 0;
        while !stop.load(Ordering::SeqCst) {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let command: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
            let id = message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "facet-command-id"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .expect("every command carries its id");
            assert_eq!(command["type"], "CancelOrder");
            let event = json!({"type": "OrderCancelled", "orderId": command["orderId"], "customerId": command["by"], "total": 10.0});
            let payload = event.to_string();
            let key = command["orderId"].as_str().unwrap().to_string();
            producer
                .send(BaseRecord::to(ORDERS).key(&key).payload(&payload).headers(
                    OwnedHeaders::new().insert(Header {
                        key: "facet-command-id",
                        value: Some(&id),
                    }),
                ))
                .unwrap();
            producer.flush(Duration::from_secs(10)).unwrap();
            handled += 1;
        }
        handled
    })
}

fn produced(broker: &Broker) -> i64 {
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(COMMANDS, 0, Duration::from_secs(10))
        .unwrap();
    high - low
}

fn post(
    runtime: &Runtime,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = agent
        .post(runtime.url(path))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body.to_string()).unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_json().unwrap_or_default())
}

#[test]
fn commands_through_a_real_broker_with_read_your_writes() {
    let (mut shop, stop, service) = Shop::start();
    let first = shop.a_waiting_command_answers_once_visible();
    shop.a_retry_with_the_same_key_produces_nothing(&first);
    shop.refused_commands_produce_nothing();
    shop.graphql_over_http();
    shop.the_stock_graphql_ws_client();
    shop.the_native_websocket_acknowledges_twice();
    shop.concurrent_requests_with_one_key_produce_once();
    shop.a_burst_is_rate_limited();
    shop.without_kafka_a_command_gets_503(stop, service);
}

/// The storefront on a real broker, the domain service that answers its commands,
/// and Alice watching her orders over the native WebSocket.
struct Shop {
    broker: Broker,
    identity: IdentityProvider,
    alice: String,
    bob: String,
    runtime: Runtime,
    address: String,
    watcher: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    _work: tempfile::TempDir,
}

impl Shop {
    fn start() -> (Shop, Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
        let logs = log_dir("commands_kafka");
        let broker = Broker::start(&logs);
        for topic in [ORDERS, "shop.payments.v1", "shop.customers.v1", COMMANDS] {
            broker.create_topic(topic, 1);
        }
        let producer = broker.producer();
        for (order, customer) in [
            ("o-1", "alice"),
            ("o-2", "bob"),
            ("o-3", "alice"),
            ("o-4", "alice"),
            ("o-5", "alice"),
            ("o-6", "alice"),
        ] {
            let placed = json!({"type": "OrderPlaced", "orderId": order, "customerId": customer, "items": [], "total": 10.0, "at": "2026-12-01T10:00:00Z"});
            producer.send(ORDERS, order, placed.to_string().as_bytes());
        }
        producer.flush();
        let identity = IdentityProvider::start();
        let (alice, bob) = (
            identity.token("alice", "storefront"),
            identity.token("bob", "storefront"),
        );
        let work = tempfile::tempdir().unwrap();
        let spec_path = work.path().join("storefront.yaml");
        std::fs::write(&spec_path, spec(&identity.jwks_uri)).unwrap();
        let mut runtime = Runtime::start(
            &spec_path,
            &work.path().join("data"),
            &broker.bootstrap(),
            "storefront-web-0",
            &logs.join("runtime.log"),
        );
        runtime.wait_ready(Duration::from_secs(60));
        let stop = Arc::new(AtomicBool::new(false));
        let service = domain_service(broker.bootstrap(), stop.clone());

        // Alice watches her orders.
        let address = runtime.url("").trim_start_matches("http://").to_string();
        let (mut watcher, _) =
            tungstenite::connect(format!("ws://{address}/ws?access_token={alice}")).unwrap();
        watcher
            .send(tungstenite::Message::text(
                json!({"type": "subscribe", "id": "mine", "projection": "order"}).to_string(),
            ))
            .unwrap();
        assert_eq!(next_json(&mut watcher)["type"], "snapshot");
        let shop = Shop {
            broker,
            identity,
            alice,
            bob,
            runtime,
            address,
            watcher,
            _work: work,
        };
        (shop, stop, service)
    }

    /// A command that waits answers once the order shows it, with the position;
    /// the watcher gets the change at that position.
    fn a_waiting_command_answers_once_visible(&mut self) -> Value {
        let cancel = json!({"orderId": "o-1", "reason": "changed my mind"});
        let (status, first) = post(
            &self.runtime,
            "/v1/commands/cancelOrder",
            &self.alice,
            &[("Idempotency-Key", "k-1")],
            cancel.clone(),
        );
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["status"], "visible");
        let position = first["position"].as_str().unwrap().to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let order: Value = agent
            .get(self.runtime.url("/v1/order/o-1"))
            .header("Authorization", format!("Bearer {}", self.alice))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        assert_eq!(order["status"], "cancelled", "read-your-writes: {order}");
        let change = next_json(&mut self.watcher);
        assert_eq!(
            (change["type"].as_str(), change["key"].as_str()),
            (Some("change"), Some("o-1")),
            "{change}"
        );
        assert_eq!(change["row"]["status"], "cancelled");
        // The position the command answered with covers the change the watcher got.
        assert_eq!(change["position"].as_str(), Some(position.as_str()));
        assert_eq!(produced(&self.broker), 1);
        first
    }

    /// A retry with the same key: the first result, nothing produced again.
    fn a_retry_with_the_same_key_produces_nothing(&self, first: &Value) {
        let cancel = json!({"orderId": "o-1", "reason": "changed my mind"});
        let (status, retry) = post(
            &self.runtime,
            "/v1/commands/cancelOrder",
            &self.alice,
            &[("Idempotency-Key", "k-1")],
            cancel,
        );
        assert_eq!(
            (status, &retry["commandId"]),
            (200, &first["commandId"]),
            "{retry}"
        );
        assert_eq!(produced(&self.broker), 1);
    }

    /// Refused before anything is produced, each with its reason.
    fn refused_commands_produce_nothing(&self) {
        let refusals = [
            (
                "cancelOrder",
                &self.alice,
                json!({"orderId": "o-2"}),
                403,
                None,
            ),
            (
                "cancelOrder",
                &self.alice,
                json!({"orderId": 2}),
                400,
                Some("orderId"),
            ),
            (
                "cancelOrder",
                &self.alice,
                json!({"reason": "x"}),
                400,
                Some("orderId"),
            ),
            (
                "cancelOrder",
                &self.alice,
                json!({"orderId": "o-3", "extra": 1}),
                400,
                Some("extra"),
            ),
            (
                "cancelOrder",
                &self.alice,
                json!({"orderId": "o-3", "reason": "x".repeat(201)}),
                400,
                Some("reason"),
            ),
            ("shipEverything", &self.alice, json!({}), 404, None),
        ];
        for (name, token, input, expected, field) in refusals {
            let (status, body) = post(
                &self.runtime,
                &format!("/v1/commands/{name}"),
                token,
                &[],
                input.clone(),
            );
            assert_eq!(status, expected, "{name} {input}: {body}");
            assert_eq!(body["error"]["field"].as_str(), field, "{body}");
        }
        assert_eq!(
            produced(&self.broker),
            1,
            "refused commands produce nothing"
        );
    }

    /// Bob over GraphQL on HTTP: a mutation, and one refused by the allow rule.
    fn graphql_over_http(&self) {
        let mutation = json!({"query": "mutation { cancelOrder(input: {orderId: \"o-2\"}) { commandId status position } }"});
        let (status, answer) = post(&self.runtime, "/graphql", &self.bob, &[], mutation);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["data"]["cancelOrder"]["status"], "VISIBLE",
            "{answer}"
        );
        let (_, refused) = post(
            &self.runtime,
            "/graphql",
            &self.bob,
            &[],
            json!({"query": "mutation { cancelOrder(input: {orderId: \"o-3\"}) { status } }"}),
        );
        assert_eq!(
            refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{refused}"
        );
    }

    /// Alice with the stock graphql-ws client.
    fn the_stock_graphql_ws_client(&self) {
        let output = facet_e2e::node::script("graphql-ws-subscriber.mjs")
    .arg(format!("ws://{}/graphql/ws", self.address))
    .arg("mutation { cancelOrder(input: {orderId: \"o-3\", reason: \"late\"}) { status position } }")
    .arg(&self.alice)
    .output()
    .expect("running node");
        let lines: Vec<Value> = BufReader::new(&output.stdout[..])
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        assert!(
            output.status.success(),
            "{lines:?} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            lines.last().unwrap()["data"]["cancelOrder"]["status"],
            "VISIBLE",
            "{lines:?}"
        );
    }

    /// The native WebSocket: acknowledged when produced, then when visible.
    fn the_native_websocket_acknowledges_twice(&mut self) {
        self.watcher.send(tungstenite::Message::text(json!({"type": "command", "id": "c-4", "name": "cancelOrder", "input": {"orderId": "o-4"}}).to_string())).unwrap();
        let mut acks = Vec::new();
        while acks.len() < 2 {
            let message = next_json(&mut self.watcher);
            if message["type"] == "ack" {
                acks.push(message);
            }
        }
        assert_eq!(acks[0]["status"], "accepted", "{acks:?}");
        assert_eq!(acks[1]["status"], "visible", "{acks:?}");
        assert_eq!(acks[0]["commandId"], acks[1]["commandId"]);
        assert!(acks[1]["position"].is_string());
        wait_for(
            "the service to handle four commands",
            Duration::from_secs(10),
            || produced(&self.broker) == 4,
        );
    }

    /// Regression (issue 24): concurrent requests with one key each produced, as the
    /// first result was remembered only after its wait. Now one record, one command;
    /// the key again with another input is refused, naming the key.
    fn concurrent_requests_with_one_key_produce_once(&self) {
        let cancel_six = json!({"orderId": "o-6"});
        let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let sends: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        post(
                            &self.runtime,
                            "/v1/commands/cancelOrder",
                            &self.alice,
                            &[("Idempotency-Key", "k-6"), ("Prefer", "wait=10")],
                            cancel_six.clone(),
                        )
                    })
                })
                .collect();
            sends.into_iter().map(|s| s.join().unwrap()).collect()
        });
        for (status, answer) in &answers {
            assert_eq!(*status, 200, "{answers:?}");
            assert_eq!(
                answer["commandId"], answers[0].1["commandId"],
                "{answers:?}"
            );
            assert_eq!(answer["status"], "visible", "{answers:?}");
        }
        assert_eq!(
            produced(&self.broker),
            5,
            "one record for four concurrent requests"
        );
        // The key again with another input: refused, naming the key.
        let (status, reused) = post(
            &self.runtime,
            "/v1/commands/cancelOrder",
            &self.alice,
            &[("Idempotency-Key", "k-6")],
            json!({"orderId": "o-6", "reason": "other"}),
        );
        assert_eq!(status, 422, "{reused}");
        assert_eq!(reused["error"]["code"], "idempotency_key_reused");
        assert!(
            reused["error"]["message"].as_str().unwrap().contains("k-6"),
            "{reused}"
        );
        assert_eq!(produced(&self.broker), 5);
        assert!(
            self.runtime
                .metric("facet_commands_total{command=\"cancelOrder\",outcome=\"visible\"}")
                >= 5.0,
            "commands counted by outcome"
        );
        assert!(self
            .runtime
            .this_run_log()
            .contains(r#"outcome="idempotency_key_reused""#));
    }

    /// Regression (issue 24): no per-user rate limit. Carol's burst of 25, then 429
    /// with Retry-After; her limit is hers alone.
    fn a_burst_is_rate_limited(&self) {
        let carol = self.identity.token("carol", "storefront");
        let statuses: Vec<(u16, Value)> = (0..26)
            .map(|_| {
                post(
                    &self.runtime,
                    "/v1/commands/cancelOrder",
                    &carol,
                    &[],
                    json!({"orderId": "o-3"}),
                )
            })
            .collect();
        assert!(
            statuses[..25].iter().all(|(s, _)| *s == 403),
            "{statuses:?}"
        );
        let (status, limited) = &statuses[25];
        assert_eq!(*status, 429, "{limited}");
        assert_eq!(limited["error"]["code"], "rate_limited");
        let retry_after = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
            .post(self.runtime.url("/v1/commands/cancelOrder"))
            .header("Authorization", format!("Bearer {carol}"))
            .header("Content-Type", "application/json")
            .send(json!({"orderId": "o-3"}).to_string())
            .unwrap()
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(matches!(retry_after, Some(1..=60)), "{retry_after:?}");
    }

    /// Without Kafka: 503, and nothing half-sent.
    fn without_kafka_a_command_gets_503(
        mut self,
        stop: Arc<AtomicBool>,
        service: std::thread::JoinHandle<usize>,
    ) {
        stop.store(true, Ordering::SeqCst);
        assert_eq!(service.join().unwrap(), 5);
        self.broker.kill();
        let (status, body) = post(
            &self.runtime,
            "/v1/commands/cancelOrder",
            &self.alice,
            &[],
            json!({"orderId": "o-5"}),
        );
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable");
        self.broker.restart();
        assert_eq!(produced(&self.broker), 5);
        self.runtime.terminate();
    }
}
