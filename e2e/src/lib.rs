//! The end-to-end harness: real components started on loopback for the tests.
//!
//! Every component writes its log under `target/e2e-logs/<test>/`, which stays
//! after a failure so CI can show what happened.

pub mod identity;
pub mod kafka;
pub mod node;
pub mod pki;
pub mod process;
pub mod storefront;

use std::path::PathBuf;

/// A child process that is killed when this goes out of scope, also when a test
/// fails half-way, so no process outlives its test.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh log directory for one test.
pub fn log_dir(test: &str) -> PathBuf {
    let dir = repo_root().join("target/e2e-logs").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the log directory");
    dir
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

/// Waits until `check` is true, or fails with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}
pub mod cluster;
pub mod follower;
pub mod gitops;
pub mod kubelet;
pub mod operator;
pub mod service_proxy;

/// The upgrade request of a graphql-transport-ws connection to `address`.
pub fn graphql_ws_request(address: &str) -> tungstenite::handshake::client::Request {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{address}/graphql/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    request
}

/// The next text message of a WebSocket, as JSON (pings and pongs are passed over).
pub fn next_json<S: std::io::Read + std::io::Write>(
    socket: &mut tungstenite::WebSocket<S>,
) -> serde_json::Value {
    loop {
        if let tungstenite::Message::Text(text) = socket.read().unwrap() {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// A graphql-transport-ws subscription, as a stock `graphql-ws` client opens it.
pub fn graphql_subscription(
    address: &str,
    query: &str,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    let (mut socket, response) =
        tungstenite::connect(graphql_ws_request(address)).expect("graphql websocket");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    socket
        .send(tungstenite::Message::text(
            r#"{"type":"connection_init","payload":{}}"#,
        ))
        .unwrap();
    let ack: serde_json::Value =
        serde_json::from_str(socket.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(ack["type"], "connection_ack");
    let subscribe =
        serde_json::json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
    socket
        .send(tungstenite::Message::text(subscribe.to_string()))
        .unwrap();
    socket
}

/// The workspace links more than one rustls backend; pick one for this process.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
