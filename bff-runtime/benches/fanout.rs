//! Live fan-out over real WebSocket connections on loopback, against a baseline
//! measured in the same run: a minimal server on the same stack (axum, the same
//! socket buffers) that routes each event by user straight to its sockets, with no
//! Kafka, store, projection or access rule. It is the floor for these sockets.
//!
//! Reproduce: `cargo bench -p facet-bff --bench fanout`
//! Options (environment): `FANOUT_CONNECTIONS` (default `1000,10000`),
//! `FANOUT_SECS` (default 10), `FANOUT_RATE` (per-user events/s, default 1000),
//! `FANOUT_BROADCAST_RATE` (events/s offered to 1,000 broadcast clients, default 1000).
//!
//! Each server runs as its own process (this binary, re-run with `FANOUT_ROLE`), so
//! its memory is measured alone. Scenarios, for each server:
//! - per user: C connections, each its own user; events for random users at the
//!   rate, each to exactly one connection. Reported: delivered / sent, p50 and p99
//!   latency from production to receipt, idle RSS per subscribed connection.
//! - broadcast: 1,000 connections that all see every event, offered more than a
//!   server can send. Reported: deliveries/s, and the slowest answer of `/healthz`
//!   and `/metrics` while overloaded (a server that collapses stops answering).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const TOPIC: &str = "bench.orders";
const BROADCAST_CONNECTIONS: usize = 1_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Every process here (driver and servers) gets the same two async workers.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn raise_fd_limit() {
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() {
    raise_fd_limit();
    match std::env::var("FANOUT_ROLE").as_deref() {
        Ok("facet") => server::facet(),
        Ok("baseline") => server::baseline(),
        _ => driver(),
    }
}

/// What one scenario measured.
#[derive(Default, Clone)]
struct Measured {
    sent: u64,
    received: u64,
    p50_ms: f64,
    p99_ms: f64,
    per_second: f64,
    idle_bytes_per_connection: f64,
    slowest_probe_ms: f64,
    closed: u64,
}

fn driver() {
    let connections: Vec<usize> = std::env::var("FANOUT_CONNECTIONS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let secs: u64 = env_or("FANOUT_SECS", 10);
    let rate: u64 = env_or("FANOUT_RATE", 1000);
    let broadcast_rate: u64 = env_or("FANOUT_BROADCAST_RATE", 1000);
    let runtime = two_workers();
    let mut results: BTreeMap<(String, String), Measured> = BTreeMap::new();
    for role in ["baseline", "facet"] {
        for &c in &connections {
            let measured = runtime.block_on(per_user(role, c, rate, secs));
            report(role, &format!("per-user {c}"), &measured);
            results.insert((format!("per-user {c}"), role.into()), measured);
        }
        let measured = runtime.block_on(broadcast(role, broadcast_rate, secs, Wire::Native));
        report(role, "broadcast 1000", &measured);
        results.insert(("broadcast 1000".into(), role.into()), measured);
    }
    // The same broadcast to stock graphql-transport-ws subscriptions (the baseline
    // speaks only its own protocol, so it is compared with its broadcast above).
    let measured = runtime.block_on(broadcast("facet", broadcast_rate, secs, Wire::Graphql));
    report("facet", "broadcast 1000 graphql", &measured);
    results.insert(("broadcast 1000 graphql".into(), "facet".into()), measured);
    println!();
    println!("| scenario | server | delivered / sent | p50 | p99 | deliveries/s | idle RSS per connection | slowest health/metrics answer | closed by server |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    // A scenario measures some columns only; the others are left blank.
    let ms = |v: f64| {
        if v.is_nan() {
            "–".to_string()
        } else {
            format!("{v:.1} ms")
        }
    };
    let kb = |v: f64| {
        if v > 0.0 {
            format!("{:.1} KB", v / 1000.0)
        } else {
            "–".into()
        }
    };
    for ((scenario, role), m) in &results {
        println!(
            "| {scenario} | {role} | {} / {} | {} | {} | {:.0} | {} | {:.0} ms | {} |",
            m.received,
            m.sent,
            ms(m.p50_ms),
            ms(m.p99_ms),
            m.per_second,
            kb(m.idle_bytes_per_connection),
            m.slowest_probe_ms,
            m.closed
        );
    }
    println!();
    for scenario in results
        .keys()
        .map(|(s, _)| s.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let floor = scenario.trim_end_matches(" graphql").to_string();
        let (Some(base), Some(facet)) = (
            results.get(&(floor, "baseline".into())),
            results.get(&(scenario.clone(), "facet".into())),
        ) else {
            continue;
        };
        println!(
            "{scenario}: facet / baseline deliveries/s = {:.2}",
            facet.per_second / base.per_second.max(1.0),
        );
    }
}

fn report(role: &str, scenario: &str, m: &Measured) {
    eprintln!(
        "{role:>8} {scenario:<16} delivered {}/{} p50 {:.1} ms p99 {:.1} ms {:.0}/s idle {:.1} KB/conn probes ≤{:.0} ms closed {}",
        m.received, m.sent, m.p50_ms, m.p99_ms, m.per_second,
        m.idle_bytes_per_connection / 1000.0, m.slowest_probe_ms, m.closed
    );
}

/// A server process of the given role, and where it listens.
struct Server {
    child: std::process::Child,
    http: SocketAddr,
    control: SocketAddr,
}

impl Server {
    fn start(role: &str) -> Server {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .env("FANOUT_ROLE", role)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        let mut parts = line.split_whitespace();
        let http = parts.next().expect("server address").parse().unwrap();
        let control = parts.next().expect("control address").parse().unwrap();
        Server {
            child,
            http,
            control,
        }
    }

    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    }

    /// Asks the server to produce events: `users` 0 means one event for everyone.
    async fn generate(&self, rate: u64, secs: u64, users: usize) {
        let url = format!(
            "http://{}/generate?rate={rate}&secs={secs}&users={users}",
            self.control
        );
        tokio::task::spawn_blocking(move || ureq::post(&url).send_empty().unwrap())
            .await
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Tally {
    received: AtomicU64,
    closed: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
    subscribed: AtomicU64,
}

/// Which protocol a client speaks.
#[derive(Clone, Copy, PartialEq)]
enum Wire {
    /// Facet's own `/ws` (and the baseline's imitation of it).
    Native,
    /// graphql-transport-ws on `/graphql/ws`, as the npm `graphql-ws` client speaks it.
    Graphql,
}

const GRAPHQL_SUBSCRIPTION: &str = r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { order { op key row { id customerId status sentAt } } }"}}"#;

/// Opens a subscribed connection (as `user`, or seeing everything) that counts what
/// it receives. Connections come from many loopback addresses, so that thousands of
/// them, run after run, never run out of ports.
async fn client(
    server: SocketAddr,
    user: Option<String>,
    n: usize,
    tally: Arc<Tally>,
    parse: bool,
    wire: Wire,
) {
    let source: SocketAddr = format!("127.0.{}.{}:0", 1 + (n / 250) % 200, 2 + n % 250)
        .parse()
        .unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(source).unwrap();
    let stream = socket.connect(server).await.unwrap();
    let path = match wire {
        Wire::Native => "ws",
        Wire::Graphql => "graphql/ws",
    };
    let url = match &user {
        Some(user) => format!("ws://{server}/{path}?as={user}"),
        None => format!("ws://{server}/{path}"),
    };
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    if wire == Wire::Graphql {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .unwrap();
    match wire {
        Wire::Native => {
            ws.send(Message::text(
                r#"{"type":"subscribe","id":"o","projection":"order"}"#,
            ))
            .await
            .unwrap();
        }
        Wire::Graphql => {
            ws.send(Message::text(r#"{"type":"connection_init"}"#))
                .await
                .unwrap();
            while let Some(Ok(message)) = ws.next().await {
                if matches!(&message, Message::Text(t) if t.contains("connection_ack")) {
                    break;
                }
            }
            ws.send(Message::text(GRAPHQL_SUBSCRIPTION)).await.unwrap();
            // An empty store sends no snapshot rows: subscribed once asked.
            tally.subscribed.fetch_add(1, Ordering::Relaxed);
        }
    }
    while let Some(message) = ws.next().await {
        let Ok(Message::Text(text)) = message else {
            if matches!(message, Ok(Message::Close(_)) | Err(_)) {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            continue;
        };
        if text.contains(r#""type":"snapshot""#) {
            tally.subscribed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        tally.received.fetch_add(1, Ordering::Relaxed);
        if parse {
            if let Some(sent) = sent_at(&text) {
                let latency = now_micros().saturating_sub(sent);
                tally.latencies_us.lock().unwrap().push(latency);
            }
        }
    }
    tally.closed.fetch_add(1, Ordering::Relaxed);
}

fn sent_at(text: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value["row"]["sentAt"]
        .as_u64()
        .or_else(|| value["payload"]["data"]["order"]["row"]["sentAt"].as_u64())
}

async fn connect_all(
    server: &Server,
    count: usize,
    per_user: bool,
    tally: &Arc<Tally>,
    wire: Wire,
) {
    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(100));
    for n in 0..count {
        let permit = slots.clone().acquire_owned().await.unwrap();
        let (http, tally) = (server.http, tally.clone());
        let user = per_user.then(|| format!("u-{n}"));
        tokio::spawn(async move {
            let waiting = tally.subscribed.load(Ordering::Relaxed);
            let task = tokio::spawn(client(http, user, n, tally.clone(), per_user, wire));
            // Hold the permit until this one is subscribed, so handshakes are paced.
            while tally.subscribed.load(Ordering::Relaxed) <= waiting && !task.is_finished() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            drop(permit);
        });
    }
    while (tally.subscribed.load(Ordering::Relaxed) as usize) < count {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "connections did not all subscribe"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn per_user(role: &str, connections: usize, rate: u64, secs: u64) -> Measured {
    let server = Server::start(role);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss();
    let tally = Arc::new(Tally::default());
    connect_all(&server, connections, true, &tally, Wire::Native).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = server.rss().saturating_sub(before) as f64 / connections as f64;
    let started = Instant::now();
    server.generate(rate, secs, connections).await;
    let sent = rate * secs;
    // Wait for the stragglers, at most 5 s past the end.
    let deadline = started + Duration::from_secs(secs + 5);
    while tally.received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = tally.latencies_us.lock().unwrap().clone();
    latencies.sort_unstable();
    Measured {
        sent,
        received: tally.received.load(Ordering::Relaxed),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        per_second: tally.received.load(Ordering::Relaxed) as f64 / elapsed.max(secs as f64),
        idle_bytes_per_connection: idle,
        slowest_probe_ms: 0.0,
        closed: tally.closed.load(Ordering::Relaxed),
    }
}

async fn broadcast(role: &str, rate: u64, secs: u64, wire: Wire) -> Measured {
    let server = Server::start(role);
    let tally = Arc::new(Tally::default());
    connect_all(&server, BROADCAST_CONNECTIONS, false, &tally, wire).await;
    let done = Arc::new(AtomicBool::new(false));
    // Health and metrics probes while the server is overloaded.
    let probes = {
        let (done, http, metrics) = (done.clone(), server.http, server.control);
        tokio::task::spawn_blocking(move || {
            let mut slowest = Duration::ZERO;
            while !done.load(Ordering::Relaxed) {
                for url in [
                    format!("http://{http}/healthz"),
                    format!("http://{metrics}/metrics"),
                ] {
                    let start = Instant::now();
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .timeout_global(Some(Duration::from_secs(10)))
                        .build()
                        .into();
                    let ok = agent.get(&url).call().is_ok();
                    slowest = slowest.max(if ok {
                        start.elapsed()
                    } else {
                        Duration::from_secs(10)
                    });
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            slowest
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received_before = tally.received.load(Ordering::Relaxed);
    let started = Instant::now();
    server.generate(rate, secs, 0).await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let received = tally.received.load(Ordering::Relaxed) - received_before;
    let elapsed = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let slowest = probes.await.unwrap();
    Measured {
        sent: rate * secs * BROADCAST_CONNECTIONS as u64,
        received,
        per_second: received as f64 / elapsed,
        slowest_probe_ms: slowest.as_secs_f64() * 1000.0,
        closed: tally.closed.load(Ordering::Relaxed),
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        ..Measured::default()
    }
}

/// The two servers. Each prints "<http address> <control address>" on its first
/// line; `POST /generate` on the control port produces events.
mod server {
    use super::*;
    use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
    use axum::extract::{Query, State};
    use axum::routing::{get, post};
    use axum::Router;
    use std::collections::HashMap;

    #[derive(serde::Deserialize)]
    struct Generate {
        rate: u64,
        secs: u64,
        users: usize,
    }

    /// Calls `emit(n, user)` at `rate` per second for `secs`; `user` is `None` when
    /// every connection should get the event.
    fn pace(g: &Generate, mut emit: impl FnMut(u64, Option<usize>)) {
        let start = Instant::now();
        let total = g.rate * g.secs;
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for n in 0..total {
            let due = start + Duration::from_secs_f64(n as f64 / g.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let user = (g.users > 0).then(|| (seed % g.users as u64) as usize);
            emit(n, user);
        }
    }

    /// `POST /generate`: each request paces `emit` on a thread of its own.
    fn generate_route(emit: impl Fn(u64, Option<usize>) + Clone + Send + Sync + 'static) -> Router {
        Router::new().route(
            "/generate",
            post(move |Query(g): Query<Generate>| {
                let emit = emit.clone();
                async move {
                    std::thread::spawn(move || pace(&g, emit));
                }
            }),
        )
    }

    fn event(n: u64, user: Option<usize>) -> serde_json::Value {
        let customer = user
            .map(|u| format!("u-{u}"))
            .unwrap_or_else(|| "everyone".into());
        serde_json::json!({"id": format!("e-{n}"), "customerId": customer, "status": "placed", "sentAt": now_micros()})
    }

    fn announce(http: SocketAddr, control: SocketAddr) {
        println!("{http} {control}");
        use std::io::Write;
        std::io::stdout().flush().unwrap();
    }

    const SPEC: &str = r#"
apiVersion: facet.dev/v1alpha1
kind: FrontendExperience
metadata: {name: fanout, namespace: bench}
spec:
  kafka:
    bootstrapServers: "unused:9092"
    # librdkafka's mock cluster answers a fetch only when this runs out, even with
    # data waiting (a real broker answers at once): without it, every event would
    # wait up to 500 ms in the mock, not in Facet.
    properties: {fetch.wait.max.ms: "5"}
  sources: [{name: orders, topic: bench.orders}]
  projections:
    - name: order
      key: event.id
      rules:
        - source: orders
          upsert: {id: event.id, customerId: event.customerId, status: event.status, sentAt: event.sentAt}
      fields:
        id: {type: string}
        customerId: {type: string}
        status: {type: string}
        sentAt: {type: integer}
      access: row.customerId == auth.sub
  api:
    limits: {maxConnections: 20000, maxPendingRows: 1000}
  auth: {anonymous: true}
"#;

    pub fn facet() {
        use facet_bff::runtime::{Runtime, RuntimeConfig};
        use facet_bff::serve::access::AuthMode;
        use rdkafka::config::ClientConfig;
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};

        let runtime = two_workers();
        runtime.block_on(async {
            let mock = MockCluster::new(1).unwrap();
            mock.create_topic(TOPIC, 3, 1).unwrap();
            let bootstrap = mock.bootstrap_servers();
            let spec = facet_bff::spec::parse_manifests(SPEC)
                .remove(0)
                .unwrap()
                .spec;
            let data = tempfile::tempdir().unwrap();
            let running = Runtime::start(RuntimeConfig {
                name: "fanout".into(),
                namespace: "bench".into(),
                ordinal: "0".into(),
                spec,
                data_dir: data.path().to_path_buf(),
                http: "127.0.0.1:0".parse().unwrap(),
                metrics: "127.0.0.1:0".parse().unwrap(),
                bootstrap_servers: Some(bootstrap.clone()),
                extra_kafka_properties: Vec::new(),
                // `?as=<user>` names the client; without it a client sees every row.
                auth: Some(AuthMode::Dev),
                dev_producer: None,
                sample_events: Vec::new(),
                console: false,
                restore_from: None,
                peers: Default::default(),
            })
            .await
            .unwrap();
            let producer: Arc<ThreadedProducer<DefaultProducerContext>> = Arc::new(
                ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .set("linger.ms", "0")
                    .create()
                    .unwrap(),
            );
            let control = generate_route(move |n, user| {
                let value = event(n, user).to_string();
                let key = format!("e-{n}");
                let _ = producer.send(BaseRecord::to(TOPIC).key(&key).payload(&value));
            });
            // The control port also serves the metrics, for the probes.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let control_addr = listener.local_addr().unwrap();
            let metrics_app = facet_bff::serve::internal_router(
                running.state.metrics.clone(),
                running.state.progress.clone(),
            );
            tokio::spawn(async move {
                axum::serve(listener, control.merge(metrics_app))
                    .await
                    .unwrap()
            });
            announce(running.http_addr, control_addr);
            std::future::pending::<()>().await;
            drop(data);
        });
    }

    /// user → the senders of its connections; `None` holds the see-everything ones.
    type Sockets = Arc<
        Mutex<
            HashMap<Option<String>, Vec<tokio::sync::mpsc::Sender<axum::extract::ws::Utf8Bytes>>>,
        >,
    >;

    pub fn baseline() {
        let runtime = two_workers();
        runtime.block_on(async {
            let sockets: Sockets = Arc::default();
            let app = Router::new()
                .route("/ws", get(upgrade))
                .route("/healthz", get(|| async { "ok" }))
                .with_state(sockets.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let http = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            let control = generate_route(move |n, user| {
                let row = event(n, user);
                let text: axum::extract::ws::Utf8Bytes = serde_json::json!({"type": "change", "id": "o", "op": "upsert", "key": row["id"], "row": row}).to_string().into();
                let sockets = sockets.lock().unwrap();
                let target = user.map(|u| format!("u-{u}"));
                for sender in sockets.get(&target).into_iter().flatten() {
                    let _ = sender.try_send(text.clone());
                }
            })
            .route("/metrics", get(|| async { "# baseline\n" }));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let control_addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, control).await.unwrap() });
            announce(http, control_addr);
            std::future::pending::<()>().await;
        });
    }

    async fn upgrade(
        State(sockets): State<Sockets>,
        Query(query): Query<HashMap<String, String>>,
        ws: WebSocketUpgrade,
    ) -> axum::response::Response {
        let user = query.get("as").cloned();
        ws.read_buffer_size(facet_bff::serve::READ_BUFFER)
            .write_buffer_size(facet_bff::serve::WRITE_BUFFER)
            .on_upgrade(move |socket| serve(socket, user, sockets))
    }

    async fn serve(mut socket: WebSocket, user: Option<String>, sockets: Sockets) {
        // Like a subscription: the client says what it wants, gets a snapshot.
        let _ = socket.recv().await;
        let _ = socket
            .send(AxumMessage::Text(r#"{"type":"snapshot","rows":[]}"#.into()))
            .await;
        let (sender, mut receiver) = tokio::sync::mpsc::channel(1000);
        sockets
            .lock()
            .unwrap()
            .entry(user)
            .or_default()
            .push(sender);
        while let Some(text) = receiver.recv().await {
            if socket.feed(AxumMessage::Text(text)).await.is_err() {
                return;
            }
            while let Ok(text) = receiver.try_recv() {
                if socket.feed(AxumMessage::Text(text)).await.is_err() {
                    return;
                }
            }
            if socket.flush().await.is_err() {
                return;
            }
        }
    }
}
